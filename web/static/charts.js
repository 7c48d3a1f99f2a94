// Drawing for the page: probability bars, training curves, the confusion matrix.

/// Fills `el` with one bar per class for `probs` (nothing when `probs` is null), the most
/// probable class highlighted.
export function bars(el, probs, names) {
  el.textContent = "";
  if (!probs) {
    el.textContent = "No face found.";
    return;
  }
  let top = 0;
  probs.forEach((p, i) => { if (p > probs[top]) top = i; });
  names.forEach((name, i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === top ? " top" : "");
    const pct = 100 * probs[i];
    row.innerHTML = `<span class="name">${name}</span><span class="track"><span class="fill" style="display:block;width:${pct.toFixed(1)}%"></span></span><span class="pct">${pct.toFixed(1)}%</span>`;
    el.append(row);
  });
}

/// Loss and accuracy per epoch, training and validation, on two canvases.
export function drawCurves(lossCanvas, accCanvas, history) {
  const epochs = history.map((h) => h.epoch);
  plot(lossCanvas, "loss", epochs, [
    { name: "training", colour: "#2f6fde", values: history.map((h) => h.train_loss) },
    { name: "validation", colour: "#e2711d", values: history.map((h) => h.val_loss) },
  ]);
  plot(accCanvas, "accuracy", epochs, [
    { name: "training", colour: "#2f6fde", values: history.map((h) => h.train_acc) },
    { name: "validation", colour: "#e2711d", values: history.map((h) => h.val_acc) },
  ]);
}

function plot(canvas, title, xs, series) {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const m = { left: 48, right: 12, top: 24, bottom: 28 };
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#1d2330";
  ctx.font = "13px sans-serif";
  ctx.fillText(`${title} per epoch`, m.left, 16);
  const all = series.flatMap((s) => s.values).filter(Number.isFinite);
  if (!xs.length || !all.length) {
    ctx.fillText("(after the first epoch)", m.left, h / 2);
    return;
  }
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const x0 = Math.min(...xs), x1 = Math.max(x0 + 1, Math.max(...xs));
  const px = (x) => m.left + ((x - x0) / (x1 - x0)) * (w - m.left - m.right);
  const py = (y) => h - m.bottom - ((y - lo) / (hi - lo)) * (h - m.top - m.bottom);
  ctx.strokeStyle = "#9aa6bd";
  ctx.beginPath();
  ctx.moveTo(m.left, m.top);
  ctx.lineTo(m.left, h - m.bottom);
  ctx.lineTo(w - m.right, h - m.bottom);
  ctx.stroke();
  ctx.fillStyle = "#4a5670";
  ctx.fillText(hi.toFixed(3), 2, m.top + 4);
  ctx.fillText(lo.toFixed(3), 2, h - m.bottom);
  ctx.fillText(`epoch ${x0}`, m.left, h - 8);
  ctx.fillText(`${x1}`, w - m.right - 16, h - 8);
  series.forEach((s, k) => {
    ctx.strokeStyle = s.colour;
    ctx.fillStyle = s.colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.values.forEach((v, i) => (i ? ctx.lineTo(px(xs[i]), py(v)) : ctx.moveTo(px(xs[i]), py(v))));
    ctx.stroke();
    s.values.forEach((v, i) => ctx.fillRect(px(xs[i]) - 2, py(v) - 2, 4, 4));
    ctx.fillText(s.name, w - m.right - 90, m.top + 14 * k + 4);
  });
  canvas.dataset.points = String(xs.length);
}

/// The 7×7 confusion matrix as a table, rows true, columns predicted.
export function confusionTable(confusion, names) {
  const t = document.createElement("table");
  t.className = "confusion";
  const head = "<tr><th>true \\ predicted</th>" + names.map((n) => `<th>${n}</th>`).join("") + "</tr>";
  const rows = confusion.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return `<tr><th>${names[i]}</th>` + row.map((c, j) => {
      const shade = Math.round(255 - 150 * (c / total));
      const bg = i === j ? `rgb(${shade},255,${shade})` : `rgb(255,${shade},${shade})`;
      return `<td style="background:${bg}">${c}</td>`;
    }).join("") + "</tr>";
  });
  t.innerHTML = head + rows.join("");
  return t;
}
