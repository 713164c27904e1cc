// A G-code file's toolpath, layer by layer, read as a stream (the file's text is never held
// whole: only the segments are kept, as 32-bit floats) and drawn from above on a canvas.
//
// Layers are counted as the print job counts them: by the slicer's layer comments where the
// file has them (so "layer 57" here is the printer's layer 57), else by each rise of Z
// between extruding moves.

const LAYER_COMMENTS = [";LAYER_CHANGE", ";LAYER:", "; layer ", "; BEGIN_LAYER"];

class Toolpath {
  constructor() {
    this.layers = [];  // [{z, extrude: number[], travel: number[]}] as x0,y0,x1,y1,...
    this.bounds = { minX: Infinity, minY: Infinity, maxX: -Infinity, maxY: -Infinity };
    this.byComments = false;
  }

  layer() {
    if (!this.layers.length) this.layers.push({ z: 0, extrude: [], travel: [] });
    return this.layers[this.layers.length - 1];
  }
}

// Reads `response`'s body (a fetch Response) into a Toolpath; `progress(fraction)` as it goes.
async function readToolpath(response, size, progress) {
  const path = new Toolpath();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let carry = "";
  let done = 0;
  let x = 0, y = 0, z = 0, e = 0;
  let absolute = true, absoluteE = true;
  let pendingLayer = false;
  let lastExtrudeZ = null;

  // A finished layer keeps its segments as 32-bit floats: half the memory of plain numbers.
  function newLayer(atZ) {
    const last = path.layers[path.layers.length - 1];
    if (last) { last.extrude = Float32Array.from(last.extrude); last.travel = Float32Array.from(last.travel); }
    path.layers.push({ z: atZ, extrude: [], travel: [] });
  }

  function line(text) {
    const trimmed = text.trim();
    if (!trimmed) return;
    if (trimmed.startsWith(";")) {
      if (LAYER_COMMENTS.some((prefix) => trimmed.startsWith(prefix))) {
        path.byComments = true;
        pendingLayer = true;
      }
      return;
    }
    const code = trimmed.split(";", 1)[0].trim().toUpperCase();
    if (!code) return;
    if (pendingLayer) { newLayer(z); pendingLayer = false; }
    const word = code.split(/\s+/, 1)[0];
    if (word === "G90") { absolute = true; absoluteE = true; return; }
    if (word === "G91") { absolute = false; absoluteE = false; return; }
    if (word === "M82") { absoluteE = true; return; }
    if (word === "M83") { absoluteE = false; return; }
    const values = {};
    for (const match of code.matchAll(/([XYZEIJ])\s*(-?\d*\.?\d+)/g)) values[match[1]] = parseFloat(match[2]);
    if (word === "G92") {
      if ("X" in values) x = values.X;
      if ("Y" in values) y = values.Y;
      if ("Z" in values) z = values.Z;
      if ("E" in values) e = values.E;
      return;
    }
    if (!["G0", "G1", "G2", "G3", "G00", "G01", "G02", "G03"].includes(word)) return;
    const nx = "X" in values ? (absolute ? values.X : x + values.X) : x;
    const ny = "Y" in values ? (absolute ? values.Y : y + values.Y) : y;
    const nz = "Z" in values ? (absolute ? values.Z : z + values.Z) : z;
    let extruding = false;
    if ("E" in values) {
      const ne = absoluteE ? values.E : e + values.E;
      extruding = ne > e + 1e-6 && (nx !== x || ny !== y);
      e = ne;
    }
    if (extruding && !path.byComments && (lastExtrudeZ === null || nz > lastExtrudeZ + 1e-4)) {
      newLayer(nz);
    }
    const target = path.layer();
    const list = extruding ? target.extrude : target.travel;
    if ((word === "G2" || word === "G3" || word === "G02" || word === "G03") && ("I" in values || "J" in values)) {
      arc(list, x, y, nx, ny, values.I || 0, values.J || 0, word.endsWith("2"));
    } else if (nx !== x || ny !== y) {
      list.push(x, y, nx, ny);
    }
    if (extruding) {
      lastExtrudeZ = nz;
      target.z = nz;
      const b = path.bounds;
      b.minX = Math.min(b.minX, x, nx); b.maxX = Math.max(b.maxX, x, nx);
      b.minY = Math.min(b.minY, y, ny); b.maxY = Math.max(b.maxY, y, ny);
    }
    x = nx; y = ny; z = nz;
  }

  for (;;) {
    const { value, done: finished } = await reader.read();
    if (finished) break;
    done += value.byteLength;
    const text = carry + decoder.decode(value, { stream: true });
    const lines = text.split("\n");
    carry = lines.pop();
    for (const each of lines) line(each);
    progress(size ? done / size : 0);
  }
  line(carry + decoder.decode());
  path.layers = path.layers.filter((layer) => layer.extrude.length || layer.travel.length);
  return path;
}

// An arc as short segments (G2 clockwise, G3 counter-clockwise), centre at (x+i, y+j).
function arc(list, x, y, nx, ny, i, j, clockwise) {
  const cx = x + i, cy = y + j;
  const radius = Math.hypot(i, j);
  let start = Math.atan2(y - cy, x - cx);
  let end = Math.atan2(ny - cy, nx - cx);
  if (clockwise && end >= start) end -= 2 * Math.PI;
  if (!clockwise && end <= start) end += 2 * Math.PI;
  const steps = Math.max(2, Math.ceil((Math.abs(end - start) * radius) / 1));
  let px = x, py = y;
  for (let k = 1; k <= steps; k++) {
    const angle = start + ((end - start) * k) / steps;
    const qx = k === steps ? nx : cx + radius * Math.cos(angle);
    const qy = k === steps ? ny : cy + radius * Math.sin(angle);
    list.push(px, py, qx, qy);
    px = qx; py = qy;
  }
}

// Draws layer `index` (0-based) of `path`, the one below faintly, fitted to the canvas: the
// model's extent with a margin, within the bed's.
function drawToolpath(canvas, path, index, bed) {
  const ratio = window.devicePixelRatio || 1;
  const size = canvas.clientWidth;
  canvas.width = canvas.height = Math.round(size * ratio);
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  const style = getComputedStyle(document.body);
  const b = path.bounds;
  const margin = 5;
  const minX = Number.isFinite(b.minX) ? b.minX - margin : 0;
  const minY = Number.isFinite(b.minY) ? b.minY - margin : 0;
  const span = Math.max((b.maxX - b.minX) + 2 * margin, (b.maxY - b.minY) + 2 * margin, 10) || bed.x;
  const scale = size / span;
  const px = (vx) => (vx - minX) * scale;
  const py = (vy) => size - (vy - minY) * scale;  // Y up, as on the printer

  function stroke(segments, color, width) {
    g.strokeStyle = color;
    g.lineWidth = width;
    g.beginPath();
    for (let k = 0; k < segments.length; k += 4) {
      g.moveTo(px(segments[k]), py(segments[k + 1]));
      g.lineTo(px(segments[k + 2]), py(segments[k + 3]));
    }
    g.stroke();
  }

  const below = path.layers[index - 1];
  if (below) stroke(below.extrude, style.getPropertyValue("--line").trim(), 1);
  const layer = path.layers[index];
  if (!layer) return;
  stroke(layer.travel, style.getPropertyValue("--muted").trim() + "55", 0.5);
  stroke(layer.extrude, style.getPropertyValue("--accent").trim(), Math.max(1, 0.45 * scale));
}

globalThis.lezer.readToolpath = readToolpath;
globalThis.lezer.drawToolpath = drawToolpath;
