//! The few pieces of the protobuf wire format an ONNX file needs: varints, 32-bit floats and
//! length-delimited fields (strings, bytes, packed arrays, nested messages).
//!
//! Fields are appended in the order they are written; protobuf readers accept any order,
//! and ONNX's own writer emits them in field-number order, which callers follow for
//! easy comparison with `protoc --decode` output.

/// Wire type of varint fields (`int32`, `int64`, enums).
const VARINT: u32 = 0;
/// Wire type of length-delimited fields (strings, bytes, messages, packed arrays).
const LEN: u32 = 2;
/// Wire type of 32-bit fields (`float`).
const FIXED32: u32 = 5;

/// One protobuf message being written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// An empty message.
    pub fn new() -> Message {
        Message::default()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no field has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        assert!(field > 0, "protobuf field numbers start at 1");
        self.varint(u64::from(field << 3 | wire));
    }

    /// An `int64`/`int32`/enum field. Negative values take ten bytes, as protobuf's
    /// two's-complement varint encoding says.
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        self.varint(v as u64);
        self
    }

    /// A `float` field.
    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A `string` field.
    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.buf)
    }

    /// A packed `repeated int64` field. Readers accept packed and unpacked encodings of
    /// repeated scalars alike (protobuf's rule), so proto2 schemas such as ONNX's read it.
    pub fn packed_ints(&mut self, field: u32, vs: &[i64]) -> &mut Self {
        let mut inner = Message::new();
        for &v in vs {
            inner.varint(v as u64);
        }
        self.bytes(field, &inner.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn encodings_match_the_protobuf_documentation() {
        // https://protobuf.dev/programming-guides/encoding/: field 1 = 150 is 08 96 01.
        let mut m = Message::new();
        m.int(1, 150);
        assert_eq!(m.clone().into_bytes(), [0x08, 0x96, 0x01]);
        // Field 2 = "testing" is 12 07 74 65 73 74 69 6e 67.
        let mut s = Message::new();
        s.string(2, "testing");
        assert_eq!(s.clone().into_bytes(), b"\x12\x07testing");
        // A nested message: field 3 holding the first message is 1a 03 08 96 01.
        let mut outer = Message::new();
        outer.message(3, &m);
        assert_eq!(outer.into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
        // Packed repeated: field 4 = [3, 270, 86942] is 22 06 03 8e 02 9e a7 05.
        let mut p = Message::new();
        p.packed_ints(4, &[3, 270, 86942]);
        assert_eq!(
            p.into_bytes(),
            [0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]
        );
    }

    #[test]
    fn negative_ints_take_ten_bytes_and_floats_four() {
        let mut m = Message::new();
        m.int(1, -1);
        assert_eq!(
            m.into_bytes(),
            [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        let mut f = Message::new();
        f.float(2, 1.0);
        assert_eq!(f.into_bytes(), [0x15, 0x00, 0x00, 0x80, 0x3f]);
        // Field numbers above 15 need a two-byte key: field 20, varint → a0 01.
        let mut k = Message::new();
        k.int(20, 2);
        assert_eq!(k.into_bytes(), [0xa0, 0x01, 0x02]);
    }
}
