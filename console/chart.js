// Hand-written canvas drawing: candlesticks with volume bars, or a line, over a time
// axis on which gaps (missing bars) are marked. Pure drawing: no fetching, no state.
"use strict";

(function (fk) {
  const COLORS = {
    up: "#1a9850", down: "#d73027", line: "#1f5fae", grid: "#ececec", axis: "#555",
    text: "#333", gap: "rgba(215, 48, 39, 0.13)", gapMark: "#d73027", volume: "#9fb3c8",
  };
  const PAD = { left: 8, right: 76, top: 10, bottom: 26 };
  const TIME_STEPS = [1e3, 5e3, 15e3, 3e4, 6e4, 3e5, 9e5, 18e5, 36e5, 72e5, 144e5, 216e5,
    432e5, 864e5, 1728e5, 6048e5, 2592e6, 7776e6, 31536e6];

  // Sizes the backing store to the element and the device's pixel ratio.
  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(100, Math.round(canvas.clientWidth || canvas.width));
    const h = Math.max(100, Math.round(canvas.clientHeight || canvas.height));
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    return { ctx, w, h };
  }

  // Round tick values between lo and hi, about `count` of them.
  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const raw = span / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
    return out;
  }

  function timeAxis(ctx, x, area, start, end) {
    const minPx = 90;
    const step = TIME_STEPS.find((s) => (s / (end - start)) * area.w >= minPx) || TIME_STEPS[TIME_STEPS.length - 1];
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = "center";
    const y = area.y + area.h;
    for (let t = Math.ceil(start / step) * step; t <= end; t += step) {
      const px = x(t);
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath(); ctx.moveTo(px, area.y); ctx.lineTo(px, y); ctx.stroke();
      const dayStart = t % 864e5 === 0;
      const label = fk.fmt.formatTs(t, dayStart ? 864e5 : step);
      const half = ctx.measureText(label).width / 2;
      ctx.fillText(label, Math.min(Math.max(px, half + 1), area.x + area.w - half), y + 14);
    }
    ctx.strokeStyle = COLORS.axis;
    ctx.beginPath(); ctx.moveTo(area.x, y + 0.5); ctx.lineTo(area.x + area.w, y + 0.5); ctx.stroke();
  }

  function valueAxis(ctx, area, lo, hi, y, scale) {
    ctx.textAlign = "left";
    for (const v of niceTicks(lo, hi, Math.max(2, Math.floor(area.h / 50)))) {
      const py = Math.round(y(v)) + 0.5;
      ctx.strokeStyle = COLORS.grid;
      ctx.beginPath(); ctx.moveTo(area.x, py); ctx.lineTo(area.x + area.w, py); ctx.stroke();
      ctx.fillStyle = COLORS.text;
      ctx.fillText(fk.fmt.formatNumber(Number((v / scale).toPrecision(8))), area.x + area.w + 6, py + 4);
    }
  }

  // Gaps: a light band over the plot and a solid mark on the time axis.
  function gapMarks(ctx, x, area, gaps, tfMs) {
    for (const g of gaps) {
      const x0 = x(g.start_ts);
      const x1 = Math.max(x(g.end_ts + tfMs), x0 + 2);
      ctx.fillStyle = COLORS.gap;
      ctx.fillRect(x0, area.y, x1 - x0, area.h);
      ctx.fillStyle = COLORS.gapMark;
      ctx.fillRect(x0, area.y + area.h - 4, x1 - x0, 6);
    }
  }

  function message(canvas, text) {
    const { ctx, w, h } = prepare(canvas);
    ctx.fillStyle = "#888";
    ctx.textAlign = "center";
    ctx.font = "14px system-ui, sans-serif";
    ctx.fillText(text, w / 2, h / 2);
  }

  // spec: {kind, start, end, bucketMs, bars, gaps, tfMs, priceScale, volumeScale}
  function draw(canvas, spec) {
    const { ctx, w, h } = prepare(canvas);
    const plotW = w - PAD.left - PAD.right;
    const full = h - PAD.top - PAD.bottom;
    const isKline = spec.kind === "kline";
    const price = { x: PAD.left, y: PAD.top, w: plotW, h: isKline ? Math.round(full * 0.76) : full };
    const vol = { x: PAD.left, y: price.y + price.h + 6, w: plotW, h: full - price.h - 6 };
    const axisArea = { x: PAD.left, y: PAD.top, w: plotW, h: full };
    const span = Math.max(1, spec.end - spec.start);
    const x = (t) => PAD.left + ((t - spec.start) / span) * plotW;

    timeAxis(ctx, x, axisArea, spec.start, spec.end);
    gapMarks(ctx, x, axisArea, spec.gaps || [], spec.tfMs);
    if (!spec.bars.length) {
      ctx.fillStyle = "#888"; ctx.textAlign = "center";
      ctx.fillText("no data in this range", PAD.left + plotW / 2, PAD.top + full / 2);
      return;
    }
    ctx.save();
    ctx.beginPath(); ctx.rect(PAD.left, 0, plotW, h); ctx.clip();
    if (isKline) candles(ctx, x, price, vol, spec);
    else line(ctx, x, price, spec);
    ctx.restore();
  }

  function candles(ctx, x, price, vol, spec) {
    let lo = Infinity, hi = -Infinity, vmax = 0;
    for (const b of spec.bars) {
      if (b.low < lo) lo = b.low;
      if (b.high > hi) hi = b.high;
      if (b.volume > vmax) vmax = b.volume;
    }
    const padY = (hi - lo) * 0.05 || 1;
    lo -= padY; hi += padY;
    const y = (v) => price.y + (1 - (v - lo) / (hi - lo)) * price.h;
    const yv = (v) => vol.y + vol.h - (vmax > 0 ? (v / vmax) * vol.h : 0);
    ctx.restore(); ctx.save();
    valueAxis(ctx, price, lo, hi, y, spec.priceScale || 1);
    ctx.beginPath(); ctx.rect(price.x, 0, price.w, price.y + price.h + vol.h + 6); ctx.clip();
    const bw = Math.max(1, ((spec.bucketMs / (spec.end - spec.start)) * price.w) * 0.7);
    for (const b of spec.bars) {
      const cx = x(b.ts + spec.bucketMs / 2);
      const up = b.close >= b.open;
      ctx.fillStyle = ctx.strokeStyle = up ? COLORS.up : COLORS.down;
      ctx.beginPath();
      ctx.moveTo(Math.round(cx) + 0.5, y(b.high)); ctx.lineTo(Math.round(cx) + 0.5, y(b.low));
      ctx.stroke();
      const top = y(Math.max(b.open, b.close));
      const bodyH = Math.max(1, y(Math.min(b.open, b.close)) - top);
      ctx.fillRect(cx - bw / 2, top, bw, bodyH);
      ctx.fillStyle = COLORS.volume;
      const vy = yv(b.volume);
      ctx.fillRect(cx - bw / 2, vy, bw, vol.y + vol.h - vy);
    }
    ctx.fillStyle = COLORS.text; ctx.textAlign = "left";
    ctx.fillText("vol " + fk.fmt.formatNumber(vmax / (spec.volumeScale || 1)), price.x + price.w + 6, vol.y + 10);
  }

  function line(ctx, x, area, spec) {
    const vals = spec.bars.map((b) => b.value).filter((v) => typeof v === "number");
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const padY = (hi - lo) * 0.05 || 1;
    lo -= padY; hi += padY;
    const y = (v) => area.y + (1 - (v - lo) / (hi - lo)) * area.h;
    ctx.restore(); ctx.save();
    valueAxis(ctx, area, lo, hi, y, 1);
    ctx.beginPath(); ctx.rect(area.x, area.y, area.w, area.h); ctx.clip();
    ctx.strokeStyle = COLORS.line; ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false, prev = -Infinity;
    for (const b of spec.bars) {
      // A missing value or a missing bucket breaks the line.
      if (typeof b.value !== "number") { pen = false; continue; }
      if (b.ts - prev > spec.bucketMs * 1.5) pen = false;
      const px = x(b.ts + spec.bucketMs / 2), py = y(b.value);
      if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
      pen = true; prev = b.ts;
    }
    ctx.stroke();
  }

  // The width of the plot area in CSS pixels: what the resample choice is made for.
  function plotWidth(canvas) {
    return Math.max(50, (canvas.clientWidth || canvas.width) - PAD.left - PAD.right);
  }

  fk.chart = { draw, message, plotWidth };
})(window.fastkConsole);
