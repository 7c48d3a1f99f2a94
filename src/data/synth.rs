//! Generated demo faces: procedurally drawn 48×48 grayscale faces whose mouth, eyebrows and
//! eyes encode the 7 emotions, so fergpu can train and be tested without FER2013.
//!
//! Each face is an ellipse on a shaded background with two eyes, two eyebrows, a nose and a
//! mouth. The emotion sets the *mean* shape of the features (smile, frown, open mouth, brow
//! slant, eye opening) and every parameter is jittered, so neighbouring classes overlap a
//! little (a faint smile can pass for neutral) and no model reaches 100%. Position, scale,
//! rotation, face and background brightness, contrast and pixel noise are random per image, so
//! no single pixel separates the classes: a model has to find the features.
//!
//! Class shares follow FER2013's Training split (Happy most common, Disgust rare) so class
//! weights matter here as they do on the real data. Usage is drawn per row: 80% Training,
//! 10% PublicTest, 10% PrivateTest. Everything is a function of the seed.

use super::{Dataset, Usage};
use crate::rng::Rng;
use crate::shape::{IMAGE_PIXELS, IMAGE_SIDE};

/// FER2013 Training class counts (Angry … Neutral), used as sampling weights.
const CLASS_COUNTS: [u32; 7] = [3995, 436, 4097, 7215, 4830, 3171, 4965];

/// The most faces `--synthetic` generates (about 460 MB of pixels).
pub const MAX_ROWS: usize = 200_000;

/// Generates `rows` faces from `seed`: labels drawn with FER2013's class shares, usage drawn
/// 80/10/10 Training/PublicTest/PrivateTest.
pub fn generate(rows: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed ^ 0xFACE_5EED);
    let mut ds = Dataset::default();
    ds.pixels.reserve(rows * IMAGE_PIXELS);
    for _ in 0..rows {
        let label = draw_label(&mut rng);
        let usage = match rng.below(10) {
            0 => Usage::PublicTest,
            1 => Usage::PrivateTest,
            _ => Usage::Training,
        };
        let img = face(label, &mut rng);
        ds.push(&img, label, usage);
    }
    ds
}

fn draw_label(rng: &mut Rng) -> u8 {
    let total: u32 = CLASS_COUNTS.iter().sum();
    let mut r = rng.below(total as usize) as u32;
    for (label, &c) in CLASS_COUNTS.iter().enumerate() {
        if r < c {
            return label as u8;
        }
        r -= c;
    }
    6
}

/// The shape of the features for one face, in face units (the face ellipse spans −1..1).
struct Expression {
    /// Eye opening (vertical radius).
    eye_open: f32,
    /// Eyebrow height at the inner end and the outer end (negative is up).
    brow_inner: f32,
    brow_outer: f32,
    /// Mouth half-width.
    mouth_w: f32,
    /// Mouth corner lift (positive: smile), and left/right asymmetry of it.
    mouth_curve: f32,
    mouth_tilt: f32,
    /// Mouth opening (vertical radius of the dark inside; 0 = closed line).
    mouth_open: f32,
    /// Draw nose wrinkles (disgust).
    wrinkle: bool,
}

fn expression(label: u8, rng: &mut Rng) -> Expression {
    let mut j = |mean: f32, sd: f32| mean + sd * rng.normal();
    let e = match label {
        // Angry: brows pulled down in a V, narrow pressed mouth, slightly narrowed eyes.
        0 => Expression {
            eye_open: j(0.07, 0.015),
            brow_inner: j(-0.30, 0.05),
            brow_outer: j(-0.50, 0.05),
            mouth_w: j(0.24, 0.04),
            mouth_curve: j(-0.05, 0.04),
            mouth_tilt: 0.0,
            mouth_open: 0.0,
            wrinkle: false,
        },
        // Disgust: lowered brows, one mouth corner raised, wrinkled nose.
        1 => Expression {
            eye_open: j(0.06, 0.015),
            brow_inner: j(-0.34, 0.05),
            brow_outer: j(-0.44, 0.05),
            mouth_w: j(0.28, 0.04),
            mouth_curve: j(-0.02, 0.04),
            mouth_tilt: j(0.10, 0.04),
            mouth_open: 0.0,
            wrinkle: true,
        },
        // Fear: brows raised and drawn together, wide eyes, mouth stretched open.
        2 => Expression {
            eye_open: j(0.12, 0.02),
            brow_inner: j(-0.62, 0.05),
            brow_outer: j(-0.50, 0.05),
            mouth_w: j(0.34, 0.04),
            mouth_curve: j(-0.03, 0.04),
            mouth_tilt: 0.0,
            mouth_open: j(0.07, 0.025),
            wrinkle: false,
        },
        // Happy: smile, slightly squinted eyes.
        3 => Expression {
            eye_open: j(0.06, 0.015),
            brow_inner: j(-0.47, 0.04),
            brow_outer: j(-0.47, 0.04),
            mouth_w: j(0.34, 0.05),
            mouth_curve: j(0.13, 0.05),
            mouth_tilt: 0.0,
            mouth_open: j(0.01, 0.02).max(0.0),
            wrinkle: false,
        },
        // Sad: inner brows raised, mouth corners down.
        4 => Expression {
            eye_open: j(0.07, 0.015),
            brow_inner: j(-0.56, 0.05),
            brow_outer: j(-0.42, 0.05),
            mouth_w: j(0.28, 0.04),
            mouth_curve: j(-0.11, 0.04),
            mouth_tilt: 0.0,
            mouth_open: 0.0,
            wrinkle: false,
        },
        // Surprise: brows high, eyes wide, round open mouth.
        5 => Expression {
            eye_open: j(0.13, 0.02),
            brow_inner: j(-0.64, 0.05),
            brow_outer: j(-0.64, 0.05),
            mouth_w: j(0.14, 0.03),
            mouth_curve: 0.0,
            mouth_tilt: 0.0,
            mouth_open: j(0.15, 0.03),
            wrinkle: false,
        },
        // Neutral: level brows, straight closed mouth.
        _ => Expression {
            eye_open: j(0.08, 0.015),
            brow_inner: j(-0.47, 0.04),
            brow_outer: j(-0.47, 0.04),
            mouth_w: j(0.28, 0.04),
            mouth_curve: j(0.0, 0.035),
            mouth_tilt: 0.0,
            mouth_open: 0.0,
            wrinkle: false,
        },
    };
    Expression {
        eye_open: e.eye_open.max(0.03),
        mouth_w: e.mouth_w.max(0.08),
        mouth_open: e.mouth_open.max(0.0),
        ..e
    }
}

/// A canvas in face coordinates: maps face units to pixels with a random similarity
/// transform and stamps soft dark disks.
struct Canvas {
    /// Pixel intensities `(48, 48)` in 0..1.
    px: Vec<f32>,
    cx: f32,
    cy: f32,
    /// Face radii in pixels.
    rx: f32,
    ry: f32,
    cos: f32,
    sin: f32,
}

impl Canvas {
    fn to_pixel(&self, u: f32, v: f32) -> (f32, f32) {
        let (x, y) = (u * self.rx, v * self.ry);
        (
            self.cx + x * self.cos - y * self.sin,
            self.cy + x * self.sin + y * self.cos,
        )
    }

    /// Blends `value` into a disk of `radius` pixels around face point (u, v), with a soft
    /// one-pixel edge.
    fn stamp(&mut self, u: f32, v: f32, radius: f32, value: f32) {
        let (px, py) = self.to_pixel(u, v);
        let side = IMAGE_SIDE as i32;
        let r = radius + 1.0;
        let (x0, x1) = ((px - r).floor() as i32, (px + r).ceil() as i32);
        let (y0, y1) = ((py - r).floor() as i32, (py + r).ceil() as i32);
        for y in y0.max(0)..=y1.min(side - 1) {
            for x in x0.max(0)..=x1.min(side - 1) {
                let d = ((x as f32 - px).powi(2) + (y as f32 - py).powi(2)).sqrt();
                let cover = (radius + 0.5 - d).clamp(0.0, 1.0);
                if cover > 0.0 {
                    let p = &mut self.px[y as usize * IMAGE_SIDE + x as usize];
                    *p += (value - *p) * cover;
                }
            }
        }
    }

    /// A stroke along face points `f(t)`, t in 0..1.
    fn stroke(&mut self, f: impl Fn(f32) -> (f32, f32), width: f32, value: f32) {
        const STEPS: usize = 24;
        for i in 0..=STEPS {
            let (u, v) = f(i as f32 / STEPS as f32);
            self.stamp(u, v, width, value);
        }
    }

    /// A filled ellipse at face point (u, v) with face-unit radii (a, b).
    fn ellipse(&mut self, u: f32, v: f32, a: f32, b: f32, value: f32) {
        let rows = ((b * self.ry).ceil() as usize).max(1);
        for i in 0..=2 * rows {
            let t = i as f32 / (2 * rows) as f32 * 2.0 - 1.0;
            let half = a * (1.0 - t * t).max(0.0).sqrt();
            let vv = v + t * b;
            self.stroke(|s| (u - half + 2.0 * half * s, vv), 0.7, value);
        }
    }
}

/// Draws one face of emotion `label`; returns `(48·48)` pixels.
pub fn face(label: u8, rng: &mut Rng) -> Vec<u8> {
    let side = IMAGE_SIDE as f32;
    let scale = rng.range(0.8, 1.1);
    let angle = rng.range(-0.2, 0.2);
    let mut c = Canvas {
        px: vec![0.0; IMAGE_PIXELS],
        cx: side / 2.0 + rng.range(-3.5, 3.5),
        cy: side / 2.0 + 1.0 + rng.range(-3.5, 3.5),
        rx: 17.0 * scale * rng.range(0.9, 1.1),
        ry: 21.0 * scale,
        cos: angle.cos(),
        sin: angle.sin(),
    };
    // Background: a random level with a linear lighting gradient.
    let bg = rng.range(0.1, 0.9);
    let (gx, gy) = (rng.range(-0.3, 0.3), rng.range(-0.3, 0.3));
    let skin = (bg + rng.range(0.15, 0.4) * if rng.uniform() < 0.5 { -1.0 } else { 1.0 })
        .clamp(0.35, 0.95);
    for y in 0..IMAGE_SIDE {
        for x in 0..IMAGE_SIDE {
            let (fx, fy) = (x as f32 / side - 0.5, y as f32 / side - 0.5);
            c.px[y * IMAGE_SIDE + x] = bg + gx * fx + gy * fy;
        }
    }
    c.ellipse(0.0, 0.0, 1.0, 1.0, skin);
    let ink = (skin - rng.range(0.3, 0.5)).max(0.0);
    let e = expression(label, rng);
    draw_features(&mut c, &e, ink, skin);
    finish(c.px, rng)
}

fn draw_features(c: &mut Canvas, e: &Expression, ink: f32, skin: f32) {
    for side in [-1.0f32, 1.0] {
        // Eye: dark ellipse.
        c.ellipse(0.38 * side, -0.18, 0.13, e.eye_open, ink);
        // Eyebrow: from inner to outer end.
        let (bi, bo) = (e.brow_inner, e.brow_outer);
        c.stroke(|t| ((0.14 + 0.42 * t) * side, bi + (bo - bi) * t), 0.9, ink);
    }
    // Nose.
    c.stroke(|t| (0.0, 0.0 + 0.2 * t), 0.6, (ink + skin) / 2.0);
    if e.wrinkle {
        for side in [-1.0f32, 1.0] {
            c.stroke(|t| ((0.08 + 0.08 * t) * side, 0.02 + 0.1 * t), 0.5, ink);
        }
    }
    // Mouth: a curve y = y0 − curve·(x/w)² − tilt·(x/w), optionally opened.
    let (w, curve, tilt) = (e.mouth_w, e.mouth_curve, e.mouth_tilt);
    let y0 = 0.5;
    if e.mouth_open > 0.025 {
        c.ellipse(0.0, y0, w, e.mouth_open, ink * 0.6);
    }
    c.stroke(
        |t| {
            let s = 2.0 * t - 1.0;
            (s * w, y0 - curve * s * s - tilt * s)
        },
        0.9,
        ink,
    );
}

/// Random contrast and pixel noise, then quantise to u8.
fn finish(px: Vec<f32>, rng: &mut Rng) -> Vec<u8> {
    let contrast = rng.range(0.6, 1.3);
    let noise = rng.range(0.02, 0.08);
    px.into_iter()
        .map(|p| {
            let q = 0.5 + (p - 0.5) * contrast + noise * rng.normal();
            (q.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faces_and_all_classes_and_splits_present() {
        let a = generate(400, 3);
        let b = generate(400, 3);
        assert_eq!(a, b);
        assert_ne!(a.pixels, generate(400, 4).pixels);
        let counts = a.class_counts();
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert!(
            counts[3] > counts[1] * 3,
            "Happy should dominate Disgust: {counts:?}"
        );
        for u in Usage::ALL {
            assert!(a.usage.contains(&u));
        }
    }

    /// No single pixel separates the classes: for each pixel, the best threshold on it
    /// classifies Happy vs Sad no better than 75%, far from what the CNN reaches.
    #[test]
    fn no_single_pixel_separates_happy_from_sad() {
        let ds = generate(3000, 11);
        let rows: Vec<usize> = (0..ds.len())
            .filter(|&i| ds.labels[i] == 3 || ds.labels[i] == 4)
            .collect();
        let mut best = 0.0f64;
        for p in 0..IMAGE_PIXELS {
            let mut v: Vec<(u8, bool)> = rows
                .iter()
                .map(|&i| (ds.image(i)[p], ds.labels[i] == 3))
                .collect();
            v.sort();
            let happy_total = v.iter().filter(|x| x.1).count();
            let mut happy_below = 0;
            for (k, x) in v.iter().enumerate() {
                happy_below += x.1 as usize;
                let sad_below = k + 1 - happy_below;
                let sad_above = rows.len() - happy_total - sad_below;
                let acc_a = (sad_below + (happy_total - happy_below)) as f64 / rows.len() as f64;
                let acc_b = (happy_below + sad_above) as f64 / rows.len() as f64;
                best = best.max(acc_a).max(acc_b);
            }
        }
        let majority = 7215.0 / (7215.0 + 4830.0);
        assert!(
            best < 0.75,
            "a single pixel separates Happy from Sad at {best:.3} (majority {majority:.3})"
        );
    }
}
