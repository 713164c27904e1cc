// A small rolling line chart on a canvas: a few series, a time window, drawn on demand.
// (A charting library would be more than the whole UI for what the dashboard needs.)

class RollingChart {
  constructor(canvas, series, seconds = 600) {
    this.canvas = canvas;
    this.series = series;  // [{key, color, dashed}]
    this.seconds = seconds;
    this.points = [];  // [time, {key: value}]
    this.pending = false;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  add(time, values) {
    this.points.push([time, values]);
    const oldest = time - this.seconds;
    while (this.points.length && this.points[0][0] < oldest) this.points.shift();
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const g = this.canvas.getContext("2d");
    g.scale(ratio, ratio);
    const style = getComputedStyle(document.body);
    const muted = style.getPropertyValue("--muted").trim();
    const line = style.getPropertyValue("--line").trim();
    let top = 50;
    for (const [, values] of this.points) {
      for (const { key } of this.series) if (values[key] > top) top = values[key];
    }
    const step = top > 150 ? 50 : 25;
    top = Math.ceil(top / step) * step;
    const left = 34;
    const now = this.points.length ? this.points[this.points.length - 1][0] : 0;
    const x = (t) => left + ((t - (now - this.seconds)) / this.seconds) * (width - left - 4);
    const y = (v) => height - 16 - (v / top) * (height - 24);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = muted;
    g.strokeStyle = line;
    g.lineWidth = 1;
    for (let v = 0; v <= top; v += step) {
      g.beginPath(); g.moveTo(left, y(v)); g.lineTo(width, y(v)); g.stroke();
      g.fillText(`${Math.round(v)}°`, 2, y(v) + 4);
    }
    g.fillText(this.label ?? `last ${Math.round(this.seconds / 60)} min`, left, height - 2);
    for (const { key, color, dashed } of this.series) {
      g.strokeStyle = style.getPropertyValue(color).trim() || color;
      g.lineWidth = dashed ? 1 : 2;
      g.setLineDash(dashed ? [4, 4] : []);
      g.beginPath();
      let started = false;
      for (const [t, values] of this.points) {
        const v = values[key];
        if (v === null || v === undefined) { started = false; continue; }
        if (started) g.lineTo(x(t), y(v)); else g.moveTo(x(t), y(v));
        started = true;
      }
      g.stroke();
    }
    g.setLineDash([]);
  }
}

globalThis.lezer.RollingChart = RollingChart;
