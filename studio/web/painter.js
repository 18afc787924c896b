// Interaction Studio: the browser-side 3D contact painter.
//
// An ES module with no bundler: three.js is imported by a relative path that the Python server
// maps to studio/web/node_modules/three/build/; three's OrbitControls and three-mesh-bvh come from
// /studio/static/lib/ (the server points their `from 'three'` at the same three module).
// `createPainter(container)` builds a toolbar and a WebGL canvas inside `container`;
// `painter.load(payload)` fetches a mesh (or point cloud) and lets the annotator paint per-label
// vertex layers (contact / affordance) with a surface brush or whole body parts. Rendering is on
// demand: a frame is requested only when something changed.
//
// Input: the camera is three's OrbitControls (right drag or Alt+left: orbit, middle or Shift+left:
// pan, wheel: zoom at the cursor; on touch screens two fingers orbit and pinch-zoom). A plain left
// press, or one finger, paints. Picking is three's Raycaster over a three-mesh-bvh bounds tree.

import * as THREE from './three/three.module.js';
import { OrbitControls } from './lib/OrbitControls.js';
import { MeshBVH, acceleratedRaycast, INTERSECTED, NOT_INTERSECTED } from './lib/three-mesh-bvh.js';

export const DEFAULT_RADIUS = 0.03;
export const MIN_RADIUS = 0.005;
export const MAX_RADIUS = 0.15;

const STYLE_ID = 'studio-painter-style';
const FALLBACK_PALETTE = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#9a6324'];
const GREY = '#d4d4d4';
const BACKGROUND = '#f3f4f6';
const OTHER_LAYER_TINT = 0.42;      // how strongly a vertex painted in another layer is tinted
const PAINT_OVER_PREDICTION = 0.62; // current-layer paint blended over the prediction heat map
const CLICK_SLOP_PX = 5;            // a left press that moves less than this is a click (part tool)
const MAX_SUBSAMPLES = 64;          // brush samples interpolated between two frames, at most
const MESH_CACHE_SIZE = 12;
const FOV = 35;

const CSS = `
.studio-painter { font: 14px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--body-text-color, #1f2937); width: 100%; box-sizing: border-box; }
.studio-painter * { box-sizing: border-box; }
.studio-painter .sp-toolbar { display: flex; flex-direction: column; gap: 6px; padding: 8px;
  border: 1px solid var(--border-color-primary, #d1d5db); border-bottom: none; border-radius: 8px 8px 0 0;
  background: var(--block-background-fill, #ffffff); }
.studio-painter .sp-row { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 10px; }
.studio-painter .sp-group { display: inline-flex; align-items: center; gap: 0; }
.studio-painter .sp-group > button { border-radius: 0; margin-left: -1px; }
.studio-painter .sp-group > button:first-child { border-radius: 6px 0 0 6px; margin-left: 0; }
.studio-painter .sp-group > button:last-child { border-radius: 0 6px 6px 0; }
.studio-painter button { font: inherit; font-size: 13px; padding: 4px 10px; cursor: pointer;
  border: 1px solid var(--border-color-primary, #cbd5e1); border-radius: 6px;
  background: var(--button-secondary-background-fill, #f8fafc); color: inherit; line-height: 1.3; }
.studio-painter button:hover:not(:disabled) { background: var(--button-secondary-background-fill-hover, #eef2f7); }
.studio-painter button:disabled { opacity: .45; cursor: default; }
.studio-painter button.active { background: #1f2937; color: #fff; border-color: #1f2937; position: relative; z-index: 1; }
.studio-painter button.sp-layer { display: inline-flex; align-items: center; gap: 6px; }
.studio-painter button.sp-layer.active { background: #fff; color: #111827; border-color: #111827;
  box-shadow: inset 0 0 0 1px #111827; font-weight: 600; }
.studio-painter .sp-swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px;
  border: 1px solid rgba(0,0,0,.25); flex: none; }
.studio-painter .sp-layer-count { font-size: 11px; opacity: .65; font-variant-numeric: tabular-nums; }
.studio-painter label.sp-field { display: inline-flex; align-items: center; gap: 6px; font-size: 13px; white-space: nowrap; }
.studio-painter input[type=range] { width: 120px; }
.studio-painter .sp-radius-value { display: inline-block; min-width: 4.2em; font-variant-numeric: tabular-nums; }
.studio-painter select { font: inherit; font-size: 13px; padding: 3px 4px; border-radius: 6px;
  border: 1px solid var(--border-color-primary, #cbd5e1); background: var(--input-background-fill, #fff); color: inherit; }
.studio-painter .sp-sep { width: 1px; align-self: stretch; background: var(--border-color-primary, #e5e7eb); }
.studio-painter .sp-view { position: relative; width: 100%; overflow: hidden; background: ${BACKGROUND};
  border: 1px solid var(--border-color-primary, #d1d5db); }
.studio-painter canvas { display: block; width: 100%; height: 100%; touch-action: none; outline: none; }
.studio-painter .sp-ring { position: absolute; left: 0; top: 0; border-radius: 50%; pointer-events: none;
  border: 1.5px solid #111827; box-shadow: 0 0 0 1px rgba(255,255,255,.8); display: none; }
.studio-painter .sp-overlay { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  pointer-events: none; color: #4b5563; font-size: 14px; padding: 16px; text-align: center; }
.studio-painter .sp-overlay.sp-error { color: #b91c1c; font-weight: 600; background: rgba(254,242,242,.92); pointer-events: auto;
  white-space: pre-wrap; }
.studio-painter .sp-legend { position: absolute; right: 10px; bottom: 10px; display: none; align-items: center; gap: 6px;
  font-size: 12px; color: #374151; background: rgba(255,255,255,.85); padding: 3px 8px; border-radius: 6px; pointer-events: none; }
.studio-painter .sp-legend-bar { width: 90px; height: 10px; border-radius: 3px; border: 1px solid rgba(0,0,0,.2); }
.studio-painter .sp-footer { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 4px 16px; padding: 6px 8px;
  font-size: 13px; border: 1px solid var(--border-color-primary, #d1d5db); border-top: none; border-radius: 0 0 8px 8px;
  background: var(--block-background-fill, #ffffff); }
.studio-painter .sp-counts { font-variant-numeric: tabular-nums; font-weight: 500; }
.studio-painter .sp-hint { opacity: .6; font-size: 12px; }
`;

// ------------------------------------------------------------------------------------------------
// Mesh data: parsing, validation, adjacency

const meshCache = new Map(); // url -> Promise<MeshData>, least recently used first

function fail(message) {
  throw new Error(message);
}

function toTypedArray(list, Type, what) {
  if (!Array.isArray(list) && !ArrayBuffer.isView(list)) fail(`mesh ${what} must be a list`);
  const out = new Type(list.length);
  for (let i = 0; i < list.length; i++) {
    const value = list[i];
    if (typeof value !== 'number' || !Number.isFinite(value)) fail(`mesh ${what}[${i}] is not a finite number`);
    out[i] = value;
  }
  return out;
}

/** Validates the mesh JSON and precomputes everything the painter needs once per mesh. */
function parseMesh(json) {
  if (!json || typeof json !== 'object') fail('mesh JSON must be an object');
  const positions = toTypedArray(json.vertices, Float32Array, 'vertices');
  if (positions.length === 0 || positions.length % 3 !== 0) fail('mesh vertices must be a non-empty flat list of x,y,z');
  const n = positions.length / 3;
  const faceList = json.faces == null ? [] : json.faces;
  const faces = toTypedArray(faceList, Uint32Array, 'faces');
  if (faces.length % 3 !== 0) fail('mesh faces must be a flat list of vertex index triples');
  for (let i = 0; i < faces.length; i++) {
    if (faces[i] >= n || faceList[i] < 0 || !Number.isInteger(faceList[i])) fail(`mesh face index ${faceList[i]} is out of range`);
  }
  let partLabels = null;
  const labelList = json.part_labels == null ? [] : json.part_labels;
  if (labelList.length) {
    if (labelList.length !== n) fail(`mesh part_labels has ${labelList.length} entries for ${n} vertices`);
    partLabels = toTypedArray(labelList, Int32Array, 'part_labels');
  }
  const partNames = Array.isArray(json.part_names) ? json.part_names.map(String) : [];
  const mesh = {
    topology: typeof json.topology === 'string' ? json.topology : '',
    n, positions, faces: faces.length ? faces : null, partLabels, partNames,
    isPointCloud: faces.length === 0,
  };
  // Bounds.
  const min = [Infinity, Infinity, Infinity];
  const max = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < 3; a++) {
      const value = positions[3 * i + a];
      if (value < min[a]) min[a] = value;
      if (value > max[a]) max[a] = value;
    }
  }
  mesh.min = min;
  mesh.max = max;
  mesh.center = [(min[0] + max[0]) / 2, (min[1] + max[1]) / 2, (min[2] + max[2]) / 2];
  mesh.size = [max[0] - min[0], max[1] - min[1], max[2] - min[2]];
  mesh.radius = Math.max(1e-6, 0.5 * Math.hypot(mesh.size[0], mesh.size[1], mesh.size[2]));
  if (mesh.faces) buildAdjacency(mesh);
  if (partLabels) {
    const byPart = new Map();
    for (let i = 0; i < n; i++) {
      const part = partLabels[i];
      if (!byPart.has(part)) byPart.set(part, []);
      byPart.get(part).push(i);
    }
    mesh.partVertices = new Map([...byPart].map(([part, ids]) => [part, Int32Array.from(ids)]));
  }
  return mesh;
}

/** Vertex adjacency as CSR arrays (offsets, neighbours, edge lengths), deduplicated. */
function buildAdjacency(mesh) {
  const { n, faces, positions } = mesh;
  const degree = new Int32Array(n + 1);
  for (let f = 0; f < faces.length; f += 3) {
    degree[faces[f]] += 2; degree[faces[f + 1]] += 2; degree[faces[f + 2]] += 2;
  }
  const start = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) start[i + 1] = start[i] + degree[i];
  const raw = new Int32Array(start[n]);
  const fill = start.slice(0, n);
  const add = (a, b) => { raw[fill[a]++] = b; };
  for (let f = 0; f < faces.length; f += 3) {
    const a = faces[f], b = faces[f + 1], c = faces[f + 2];
    add(a, b); add(a, c); add(b, a); add(b, c); add(c, a); add(c, b);
  }
  const offsets = new Int32Array(n + 1);
  const neighbours = new Int32Array(raw.length);
  let count = 0;
  for (let i = 0; i < n; i++) {
    offsets[i] = count;
    const segment = raw.subarray(start[i], start[i + 1]).sort();
    let previous = -1;
    for (let k = 0; k < segment.length; k++) {
      const j = segment[k];
      if (j !== previous && j !== i) neighbours[count++] = j;
      previous = j;
    }
  }
  offsets[n] = count;
  const weights = new Float32Array(count);
  for (let i = 0; i < n; i++) {
    for (let k = offsets[i]; k < offsets[i + 1]; k++) {
      const j = neighbours[k];
      weights[k] = Math.hypot(positions[3 * i] - positions[3 * j], positions[3 * i + 1] - positions[3 * j + 1],
        positions[3 * i + 2] - positions[3 * j + 2]);
    }
  }
  mesh.adjOffsets = offsets;
  mesh.adjNeighbours = neighbours.slice(0, count);
  mesh.adjWeights = weights;
}

async function fetchMesh(url) {
  if (meshCache.has(url)) {
    const cached = meshCache.get(url);
    meshCache.delete(url); // re-insert: most recently used last
    meshCache.set(url, cached);
    return cached;
  }
  const promise = (async () => {
    let response;
    try {
      response = await fetch(url, { credentials: 'same-origin' });
    } catch (error) {
      fail(`could not fetch the mesh (${url}): ${error.message || error}`);
    }
    if (!response.ok) fail(`could not fetch the mesh (${url}): HTTP ${response.status}`);
    let json;
    try {
      json = await response.json();
    } catch (error) {
      fail(`the mesh at ${url} is not valid JSON`);
    }
    return parseMesh(json);
  })();
  meshCache.set(url, promise);
  promise.catch(() => meshCache.delete(url));
  while (meshCache.size > MESH_CACHE_SIZE) meshCache.delete(meshCache.keys().next().value);
  return promise;
}

// ------------------------------------------------------------------------------------------------
// A binary min-heap of (key, vertex) on typed arrays, for geodesic Dijkstra.

class MinHeap {
  constructor(capacity = 256) {
    this.keys = new Float64Array(capacity);
    this.values = new Int32Array(capacity);
    this.size = 0;
  }

  clear() { this.size = 0; }

  push(key, value) {
    if (this.size === this.keys.length) {
      const keys = new Float64Array(this.size * 2); keys.set(this.keys); this.keys = keys;
      const values = new Int32Array(this.size * 2); values.set(this.values); this.values = values;
    }
    const { keys, values } = this;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent] <= key) break;
      keys[i] = keys[parent]; values[i] = values[parent];
      i = parent;
    }
    keys[i] = key; values[i] = value;
  }

  /** Removes the minimum; its key is left in `this.topKey`, its value returned. */
  pop() {
    const { keys, values } = this;
    const value = values[0];
    this.topKey = keys[0];
    const last = --this.size;
    if (last > 0) {
      const key = keys[last], moved = values[last];
      let i = 0;
      for (;;) {
        let child = 2 * i + 1;
        if (child >= last) break;
        if (child + 1 < last && keys[child + 1] < keys[child]) child++;
        if (keys[child] >= key) break;
        keys[i] = keys[child]; values[i] = values[child];
        i = child;
      }
      keys[i] = key; values[i] = moved;
    }
    return value;
  }
}

// ------------------------------------------------------------------------------------------------
// Colours (all mixing happens in three's linear working colour space)

function linearColour(hex) {
  const colour = new THREE.Color();
  colour.setStyle(hex);
  return [colour.r, colour.g, colour.b];
}

const HEAT_STOPS = [[0, '#d4d4d4'], [0.3, '#fde68a'], [0.65, '#f97316'], [1, '#b91c1c']];
const HEAT_LUT = (() => {
  const stops = HEAT_STOPS.map(([t, hex]) => [t, linearColour(hex)]);
  const lut = new Float32Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    let k = 0;
    while (k < stops.length - 2 && t > stops[k + 1][0]) k++;
    const [t0, c0] = stops[k], [t1, c1] = stops[k + 1];
    const u = Math.min(1, Math.max(0, (t - t0) / (t1 - t0)));
    for (let a = 0; a < 3; a++) lut[3 * i + a] = c0[a] + (c1[a] - c0[a]) * u;
  }
  return lut;
})();
const HEAT_CSS = `linear-gradient(to right, ${HEAT_STOPS.map(([t, hex]) => `${hex} ${t * 100}%`).join(', ')})`;

function validHex(value) {
  return typeof value === 'string' && /^#[0-9a-fA-F]{6}$/.test(value);
}

/** A round sprite for point clouds (alpha-tested, so points draw as discs, not squares). */
function discTexture() {
  const size = 64;
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = size;
  const context = canvas.getContext('2d');
  context.fillStyle = '#ffffff';
  context.beginPath();
  context.arc(size / 2, size / 2, size / 2 - 1, 0, 2 * Math.PI);
  context.fill();
  const texture = new THREE.CanvasTexture(canvas);
  texture.colorSpace = THREE.SRGBColorSpace;
  return texture;
}

// ------------------------------------------------------------------------------------------------

function injectStyles(container) {
  const root = container.getRootNode ? container.getRootNode() : document;
  const host = root instanceof ShadowRoot ? root : document.head;
  const scope = root instanceof ShadowRoot ? root : document;
  if (scope.getElementById ? scope.getElementById(STYLE_ID) : scope.querySelector(`#${STYLE_ID}`)) return;
  const style = document.createElement('style');
  style.id = STYLE_ID;
  style.textContent = CSS;
  host.appendChild(style);
}

function element(tag, props = {}, parent = null) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'text') node.textContent = value;
    else if (key === 'className') node.className = value;
    else node.setAttribute(key, value);
  }
  if (parent) parent.appendChild(node);
  return node;
}

function parsePayload(payload) {
  if (typeof payload === 'string') {
    try {
      payload = JSON.parse(payload);
    } catch (error) {
      fail('the payload is not valid JSON');
    }
  }
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) fail('the payload must be an object');
  if (typeof payload.mesh_url !== 'string' || !payload.mesh_url) fail('the payload has no mesh_url');
  const labels = payload.labels;
  if (!Array.isArray(labels) || labels.length === 0) fail('the payload has no labels');
  const seen = new Set();
  for (const label of labels) {
    if (typeof label !== 'string' || !label) fail('every label must be a non-empty string');
    if (seen.has(label)) fail(`duplicate label ${JSON.stringify(label)}`);
    seen.add(label);
  }
  const obj = (value, what) => {
    if (value == null) return {};
    if (typeof value !== 'object' || Array.isArray(value)) fail(`payload ${what} must be an object`);
    return value;
  };
  let taskId = payload.task_id;
  if (taskId === undefined) taskId = null;
  return {
    meshUrl: payload.mesh_url,
    kind: payload.kind === 'object_affordance' ? 'object_affordance' : 'human_contact',
    topology: typeof payload.topology === 'string' ? payload.topology : null,
    taskId,
    labels: labels.slice(),
    colours: obj(payload.colours, 'colours'),
    layers: obj(payload.layers, 'layers'),
    prediction: obj(payload.prediction, 'prediction'),
    view: viewDirection(payload.view),
    annotationUrl: typeof payload.annotation_url === 'string' && payload.annotation_url ? payload.annotation_url : null,
    // The pass for the server's stroke check outside Gradio's queue (studio/painter_api.py), when the page gives one.
    check: typeof payload.check_url === 'string' && typeof payload.ticket === 'string'
      ? { url: payload.check_url, ticket: payload.ticket } : null,
  };
}

/** The payload's optional `view`: the direction [x, y, z] from the mesh's centre towards the camera (the side that
 * shows the surface to paint); null keeps the front view. */
function viewDirection(value) {
  if (value == null) return null;
  if (!Array.isArray(value) || value.length !== 3 || !value.every((v) => Number.isFinite(v))) {
    fail('payload view must be three finite numbers');
  }
  const length = Math.hypot(value[0], value[1], value[2]);
  return length > 1e-9 ? value.map((v) => v / length) : null;
}

// The starting layers and prediction of a task, when the payload names them by URL (a cached,
// content-addressed response of the server, fetched alongside the mesh) instead of carrying them inline.
async function fetchAnnotation(url) {
  let response;
  try {
    response = await fetch(url, { credentials: 'same-origin' });
  } catch (error) {
    fail(`could not fetch the task's starting layers: ${error.message || error}`);
  }
  if (!response.ok) fail(`could not fetch the task's starting layers: HTTP ${response.status}`);
  let json;
  try {
    json = await response.json();
  } catch (error) {
    fail('the task\'s starting layers are not valid JSON');
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) fail('the task\'s starting layers must be an object');
  return json;
}

// ------------------------------------------------------------------------------------------------

/**
 * Builds the painter UI inside `container` and returns the painter object (also `window.studioPainter`).
 * options: { height: canvas height in CSS px (default 560) }
 */
export function createPainter(container, options = {}) {
  if (!(container instanceof HTMLElement)) throw new TypeError('createPainter needs a container element');
  injectStyles(container);
  container.replaceChildren();
  container.dataset.ready = '0';
  const height = Number(options.height) > 0 ? Number(options.height) : 560;

  // ---- DOM ----
  const root = element('div', { className: 'studio-painter' }, container);
  const toolbar = element('div', { className: 'sp-toolbar' }, root);
  const layerRow = element('div', { className: 'sp-row sp-layers', role: 'group', 'aria-label': 'Layers' }, toolbar);
  const toolRow = element('div', { className: 'sp-row' }, toolbar);

  const modeGroup = element('div', { className: 'sp-group', role: 'group', 'aria-label': 'Mode' }, toolRow);
  const paintButton = element('button', { type: 'button', text: 'Paint', title: 'Paint into the current layer', dataset: { action: 'paint' } }, modeGroup);
  const eraseButton = element('button', { type: 'button', text: 'Erase', title: 'Erase from the current layer', dataset: { action: 'erase' } }, modeGroup);
  const toolGroup = element('div', { className: 'sp-group', role: 'group', 'aria-label': 'Tool' }, toolRow);
  const brushButton = element('button', { type: 'button', text: 'Brush', title: 'Drag to paint within the brush radius', dataset: { action: 'brush' } }, toolGroup);
  const partButton = element('button', { type: 'button', text: 'Part', title: 'Click to fill (or clear) a whole body part', dataset: { action: 'part' } }, toolGroup);
  element('span', { className: 'sp-sep' }, toolRow);
  const radiusField = element('label', { className: 'sp-field', title: 'Brush radius' }, toolRow);
  element('span', { text: 'Radius' }, radiusField);
  const radiusInput = element('input', {
    type: 'range', min: String(MIN_RADIUS), max: String(MAX_RADIUS), step: '0.001', value: String(DEFAULT_RADIUS),
    dataset: { control: 'radius' }, 'aria-label': 'Brush radius in metres',
  }, radiusField);
  const radiusValue = element('span', { className: 'sp-radius-value' }, radiusField);
  const distanceField = element('label', { className: 'sp-field' }, toolRow);
  const distanceSelect = element('select', { dataset: { control: 'distance' }, 'aria-label': 'Brush distance' }, distanceField);
  element('option', { value: 'geodesic', text: 'Geodesic' }, distanceSelect);
  element('option', { value: 'euclidean', text: 'Euclidean' }, distanceSelect);
  const historyRow = element('div', { className: 'sp-row' }, toolbar);
  const historyGroup = element('div', { className: 'sp-group', role: 'group', 'aria-label': 'History' }, historyRow);
  const undoButton = element('button', { type: 'button', text: 'Undo', title: 'Undo (Ctrl+Z)', dataset: { action: 'undo' } }, historyGroup);
  const redoButton = element('button', { type: 'button', text: 'Redo', title: 'Redo (Ctrl+Shift+Z / Ctrl+Y)', dataset: { action: 'redo' } }, historyGroup);
  const viewButton = element('button', { type: 'button', text: 'Reset view', title: 'Front view of the whole mesh', dataset: { action: 'reset-view' } }, historyRow);
  element('span', { className: 'sp-sep' }, historyRow);
  const predictionField = element('label', { className: 'sp-field' }, historyRow);
  const predictionInput = element('input', { type: 'checkbox', dataset: { control: 'prediction' } }, predictionField);
  element('span', { text: 'Show prediction' }, predictionField);

  const view = element('div', { className: 'sp-view' }, root);
  view.style.height = `${height}px`;
  const canvas = element('canvas', { tabindex: '0', 'aria-label': '3D painter canvas' }, view);
  const ring = element('div', { className: 'sp-ring' }, view);
  const legend = element('div', { className: 'sp-legend' }, view);
  element('span', { text: 'prediction 0' }, legend);
  const legendBar = element('span', { className: 'sp-legend-bar' }, legend);
  legendBar.style.background = HEAT_CSS;
  element('span', { text: '1' }, legend);
  const overlay = element('div', { className: 'sp-overlay', text: 'No mesh loaded.' }, view);

  const footer = element('div', { className: 'sp-footer' }, root);
  const countsLine = element('span', { className: 'sp-counts', dataset: { role: 'counts' } }, footer);
  const hintLine = element('span', { className: 'sp-hint' }, footer);

  // ---- three.js ----
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  } catch (error) {
    overlay.textContent = `WebGL is not available in this browser: ${error.message || error}`;
    overlay.classList.add('sp-error');
    throw error;
  }
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  renderer.setClearColor(new THREE.Color(BACKGROUND), 1);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(FOV, 1, 0.01, 100);
  scene.add(camera);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x7a7268, 1.0));
  const keyLight = new THREE.DirectionalLight(0xffffff, 2.1);
  keyLight.position.set(-0.6, 1.0, 1.2); // upper left, behind the viewer: it follows the camera
  keyLight.target.position.set(0, 0, -1);
  camera.add(keyLight, keyLight.target);
  const meshMaterial = new THREE.MeshLambertMaterial({ vertexColors: true, side: THREE.DoubleSide });
  const pointMaterial = new THREE.PointsMaterial({ vertexColors: true, sizeAttenuation: true, size: 0.01,
    map: discTexture(), alphaTest: 0.5, transparent: false });
  meshMaterial.fog = false;
  scene.fog = new THREE.Fog(BACKGROUND, 1, 100); // depth cue for point clouds only (points carry no normals)

  // ---- state ----
  const st = {
    ready: false, loading: false, loadToken: 0,
    payload: null, mesh: null, object: null, geometry: null, colours: null,
    label: null, mode: 'paint', tool: 'brush', radius: DEFAULT_RADIUS,
    distancePref: 'geodesic', showPrediction: false,
    layerSets: new Map(), counts: new Map(), layerColours: new Map(), predictions: new Map(),
    undo: [], redo: [], loadedAt: performance.now(),
    cameraVersion: 0, projectedVersion: -1, projected: null,
    drag: null, stroke: null, hover: null, frame: 0, destroyed: false,
    perf: { applyMs: 0, renderMs: 0, strokeMs: 0, stampMs: 0, pickMs: 0 },
    touches: new Set(), // active touch pointers on the canvas
  };
  const heap = new MinHeap(1024);
  let geoDist = new Float64Array(0);
  let geoStamp = new Uint32Array(0);
  let stampValue = 0;
  const layerButtons = new Map();

  // ---- helpers ----
  const clamp = (value, lo, hi) => Math.min(hi, Math.max(lo, value));
  const effectiveDistance = () => (st.mesh && st.mesh.isPointCloud ? 'euclidean' : st.distancePref);
  const predictionAvailable = () => st.predictions.has(st.label);
  const predictionOn = () => st.showPrediction && predictionAvailable();

  function countsObject() {
    const out = {};
    if (st.payload) for (const label of st.payload.labels) out[label] = st.counts.get(label) || 0;
    return out;
  }

  function showError(message) {
    overlay.textContent = message;
    overlay.classList.add('sp-error');
    overlay.style.display = 'flex';
  }

  function showMessage(message) {
    overlay.classList.remove('sp-error');
    overlay.textContent = message;
    overlay.style.display = message ? 'flex' : 'none';
  }

  function emitChange() {
    container.dispatchEvent(new CustomEvent('painter-change', {
      detail: { counts: countsObject(), label: st.label, taskId: st.payload ? st.payload.taskId : null },
    }));
  }

  // ---- rendering ----
  function requestRender() {
    if (!st.frame && !st.destroyed) st.frame = requestAnimationFrame(onFrame);
  }

  function renderNow() {
    const t0 = performance.now();
    if (st.geometry && st.colours) st.colours.needsUpdate = true;
    renderer.render(scene, camera);
    st.perf.renderMs = performance.now() - t0;
  }

  let coloursDirty = false;
  function onFrame() {
    st.frame = 0;
    if (st.destroyed) return;
    const t0 = performance.now();
    if (st.stroke && st.stroke.pending) processStroke();
    if (st.hover && st.hover.pending) updateHover();
    const applied = performance.now() - t0;
    if (applied > 0.001) st.perf.applyMs = applied;
    if (coloursDirty) { st.colours.needsUpdate = true; coloursDirty = false; }
    renderNow();
  }

  function resize() {
    const width = Math.max(1, view.clientWidth);
    const h = Math.max(1, view.clientHeight);
    renderer.setSize(width, h, false);
    camera.aspect = width / h;
    updateCamera();
  }

  // ---- camera: three's OrbitControls ----
  // Connected to the canvas only after the painter's own pointer listeners (below), so that a paint
  // press can switch the left button off for the controls before they see the press.
  const controls = new OrbitControls(camera);
  controls.enableDamping = false;
  controls.zoomToCursor = true;
  controls.screenSpacePanning = true;
  controls.minPolarAngle = 0.02;
  controls.maxPolarAngle = Math.PI - 0.02;
  controls.mouseButtons = { LEFT: THREE.MOUSE.ROTATE, MIDDLE: THREE.MOUSE.PAN, RIGHT: THREE.MOUSE.ROTATE };
  controls.touches = { ONE: null, TWO: THREE.TOUCH.DOLLY_ROTATE }; // one finger paints
  controls.enabled = false;
  controls.addEventListener('change', onCameraChange);

  const cameraDistance = () => camera.position.distanceTo(controls.target);

  /** Near/far planes and fog follow the distance to the target; every camera change lands here. */
  function onCameraChange() {
    const distance = cameraDistance();
    const scale = st.mesh ? st.mesh.radius : 1;
    camera.near = Math.max(1e-4, Math.min(distance * 0.05, scale * 0.02));
    camera.far = distance + scale * 20;
    camera.updateProjectionMatrix();
    camera.updateMatrixWorld(true);
    scene.fog.near = Math.max(0, distance - scale * 0.6);
    scene.fog.far = distance + scale * 3;
    st.cameraVersion++;
    if (st.hover && !st.drag) st.hover.pending = true;
    requestRender();
  }

  function updateCamera() {
    controls.update();
    onCameraChange();
  }

  /** Front view along -Z at the mesh centre, the whole mesh in view. */
  function frameMesh() {
    const mesh = st.mesh;
    if (!mesh) return;
    const tanHalf = Math.tan(THREE.MathUtils.degToRad(FOV / 2));
    const fitHeight = (mesh.size[1] / 2) / tanHalf;
    const fitWidth = (mesh.size[0] / 2) / (tanHalf * camera.aspect);
    const distance = Math.max(fitHeight, fitWidth, mesh.radius * 0.2) * 1.12 + mesh.size[2] / 2;
    controls.minDistance = mesh.radius * 0.05;
    controls.maxDistance = mesh.radius * 30;
    controls.target.set(mesh.center[0], mesh.center[1], mesh.center[2]);
    camera.up.set(0, 1, 0);
    const along = (st.payload && st.payload.view) || [0, 0, 1]; // from the centre towards the camera
    const reach = distance + mesh.radius * (along[2] === 1 ? 0 : 0.5); // a turned view sees the depth too
    camera.position.set(mesh.center[0] + along[0] * reach, mesh.center[1] + along[1] * reach,
                        mesh.center[2] + along[2] * reach);
    camera.lookAt(controls.target);
    updateCamera();
  }

  // ---- picking ----
  const rayOrigin = new THREE.Vector3();
  const rayDir = new THREE.Vector3();

  /** Sets rayOrigin/rayDir for canvas CSS pixel (px, py). */
  function setRay(px, py) {
    const w = Math.max(1, view.clientWidth), h = Math.max(1, view.clientHeight);
    rayOrigin.copy(camera.position);
    rayDir.set((px / w) * 2 - 1, 1 - (py / h) * 2, 0.5).unproject(camera).sub(rayOrigin).normalize();
  }

  const raycaster = new THREE.Raycaster();
  raycaster.firstHitOnly = true; // three-mesh-bvh: the nearest hit only

  /** Nearest ray/triangle hit (three's Raycaster over the mesh's bounds tree): {t, face, point} or null. */
  function raycastMesh(origin, dir) {
    raycaster.set(origin, dir);
    const hits = raycaster.intersectObject(st.object, false);
    if (!hits.length) return null;
    const { distance, faceIndex, point } = hits[0];
    return { t: distance, face: faceIndex, point: [point.x, point.y, point.z] };
  }

  /** Screen-space projection of every point (canvas CSS px + view depth), cached per camera. */
  function projectedPoints() {
    if (st.projectedVersion === st.cameraVersion && st.projected) return st.projected;
    const { n, positions } = st.mesh;
    const out = st.projected && st.projected.length === 3 * n ? st.projected : new Float32Array(3 * n);
    const m = new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse).elements;
    const w = view.clientWidth, h = view.clientHeight;
    for (let i = 0; i < n; i++) {
      const x = positions[3 * i], y = positions[3 * i + 1], z = positions[3 * i + 2];
      const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (cw <= 1e-9) { out[3 * i] = NaN; out[3 * i + 1] = NaN; out[3 * i + 2] = Infinity; continue; }
      out[3 * i] = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / cw + 1) * 0.5 * w;
      out[3 * i + 1] = (1 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw) * 0.5 * h;
      out[3 * i + 2] = cw; // view depth
    }
    let minDepth = Infinity;
    for (let i = 2; i < out.length; i += 3) if (out[i] < minDepth) minDepth = out[i];
    out.minDepth = minDepth;
    st.projected = out;
    st.projectedVersion = st.cameraVersion;
    return out;
  }

  function pointPixelSize(depth) {
    const h = Math.max(1, view.clientHeight);
    return (pointMaterial.size * h * 0.5) / (depth * Math.tan(THREE.MathUtils.degToRad(FOV / 2)));
  }

  /**
   * Point clouds: the point nearest the cursor on the front surface, i.e. among the points within
   * a brush radius (on screen) of the cursor, those no deeper than the front-most one plus a radius.
   */
  function pickPoint(px, py) {
    const proj = projectedPoints();
    const n = st.mesh.n;
    let nearest = -1, nearestD2 = Infinity;
    for (let i = 0; i < n; i++) {
      const ddx = proj[3 * i] - px, ddy = proj[3 * i + 1] - py;
      const d2 = ddx * ddx + ddy * ddy;
      if (d2 < nearestD2) { nearestD2 = d2; nearest = i; }
    }
    if (nearest < 0) return null;
    const nearDepth = Math.min(proj[3 * nearest + 2], proj.minDepth); // size the window for the front of the cloud
    const reach = Math.max(4, pointPixelSize(nearDepth), projectedRadiusPx(nearDepth));
    if (nearestD2 > reach * reach) return null;
    let front = Infinity;
    for (let i = 0; i < n; i++) {
      const ddx = proj[3 * i] - px, ddy = proj[3 * i + 1] - py;
      if (ddx * ddx + ddy * ddy <= reach * reach && proj[3 * i + 2] < front) front = proj[3 * i + 2];
    }
    let best = nearest, bestD2 = Infinity;
    for (let i = 0; i < n; i++) {
      const ddx = proj[3 * i] - px, ddy = proj[3 * i + 1] - py;
      const d2 = ddx * ddx + ddy * ddy;
      if (d2 <= reach * reach && proj[3 * i + 2] <= front + st.radius && d2 < bestD2) { bestD2 = d2; best = i; }
    }
    const p = st.mesh.positions;
    const point = [p[3 * best], p[3 * best + 1], p[3 * best + 2]];
    return { t: camera.position.distanceTo(new THREE.Vector3(...point)), vertex: best, point };
  }

  /** Surface hit under canvas pixel (px, py): {t, point, face?, vertex} or null. */
  function pick(px, py) {
    if (!st.mesh) return null;
    const t0 = performance.now();
    const hit = pickUntimed(px, py);
    st.perf.pickMs = performance.now() - t0;
    return hit;
  }

  function pickUntimed(px, py) {
    if (st.mesh.isPointCloud) return pickPoint(px, py);
    setRay(px, py);
    const hit = raycastMesh(rayOrigin, rayDir);
    if (!hit) return null;
    const { positions: p, faces } = st.mesh;
    let nearest = -1, nearestD = Infinity;
    for (let k = 0; k < 3; k++) {
      const v = faces[3 * hit.face + k];
      const d = Math.hypot(p[3 * v] - hit.point[0], p[3 * v + 1] - hit.point[1], p[3 * v + 2] - hit.point[2]);
      if (d < nearestD) { nearestD = d; nearest = v; }
    }
    hit.vertex = nearest;
    return hit;
  }

  // ---- brush ----
  const brushSphere = new THREE.Sphere();

  /** A fresh visit stamp for per-vertex scratch arrays (no clearing per brush stamp). */
  function nextStamp(n) {
    if (geoDist.length !== n) { geoDist = new Float64Array(n); geoStamp = new Uint32Array(n); stampValue = 0; }
    stampValue = (stampValue + 1) >>> 0;
    if (stampValue === 0) { geoStamp.fill(0); stampValue = 1; }
    return stampValue;
  }

  /** Calls visit(id) for every vertex the brush covers at `hit`. */
  function brushVertices(hit, visit) {
    const mesh = st.mesh;
    const radius = st.radius;
    const [hx, hy, hz] = hit.point;
    const p = mesh.positions;
    let any = false;
    if (effectiveDistance() === 'euclidean' && hit.face != null) {
      // The bounds tree hands over only the triangles near the brush sphere.
      const r2 = radius * radius;
      const faces = mesh.faces;
      const stamp = nextStamp(mesh.n);
      brushSphere.center.set(hx, hy, hz);
      brushSphere.radius = radius;
      st.geometry.boundsTree.shapecast({
        intersectsBounds: (box) => (brushSphere.intersectsBox(box) ? INTERSECTED : NOT_INTERSECTED),
        intersectsTriangle: (triangle, index) => {
          for (let k = 0; k < 3; k++) {
            const v = faces[3 * index + k];
            if (geoStamp[v] === stamp) continue;
            const dx = p[3 * v] - hx, dy = p[3 * v + 1] - hy, dz = p[3 * v + 2] - hz;
            if (dx * dx + dy * dy + dz * dz <= r2) { geoStamp[v] = stamp; visit(v); any = true; }
          }
          return false;
        },
      });
    } else if (effectiveDistance() === 'euclidean' || hit.face == null) {
      const r2 = radius * radius;
      for (let i = 0; i < mesh.n; i++) {
        const dx = p[3 * i] - hx, dy = p[3 * i + 1] - hy, dz = p[3 * i + 2] - hz;
        if (dx * dx + dy * dy + dz * dz <= r2) { visit(i); any = true; }
      }
    } else {
      const stamp = nextStamp(mesh.n);
      heap.clear();
      for (let k = 0; k < 3; k++) {
        const v = mesh.faces[3 * hit.face + k];
        const d = Math.hypot(p[3 * v] - hx, p[3 * v + 1] - hy, p[3 * v + 2] - hz);
        if (d > radius) continue;
        if (geoStamp[v] !== stamp || d < geoDist[v]) { geoStamp[v] = stamp; geoDist[v] = d; heap.push(d, v); }
      }
      const { adjOffsets, adjNeighbours, adjWeights } = mesh;
      while (heap.size) {
        const v = heap.pop();
        const d = heap.topKey;
        if (d > geoDist[v]) continue; // stale entry: v was settled with a shorter distance
        visit(v); any = true;
        for (let k = adjOffsets[v]; k < adjOffsets[v + 1]; k++) {
          const j = adjNeighbours[k];
          const nd = d + adjWeights[k];
          if (nd > radius) continue;
          if (geoStamp[j] !== stamp || nd < geoDist[j]) { geoStamp[j] = stamp; geoDist[j] = nd; heap.push(nd, j); }
        }
      }
    }
    if (!any && hit.vertex != null) visit(hit.vertex); // the brush always takes the nearest vertex
  }

  function setMembership(label, id, on, changed) {
    const set = st.layerSets.get(label);
    if (!set || (set[id] === 1) === on) return;
    set[id] = on ? 1 : 0;
    st.counts.set(label, (st.counts.get(label) || 0) + (on ? 1 : -1));
    if (changed) changed.push(id);
    recolourVertex(id);
    coloursDirty = true;
  }

  function projectedRadiusPx(depth) {
    const h = Math.max(1, view.clientHeight);
    return (st.radius * h * 0.5) / (Math.max(1e-6, depth) * Math.tan(THREE.MathUtils.degToRad(FOV / 2)));
  }

  function beginStroke(px, py) {
    // (lastX, lastY) is where the brush was last applied; the press point is stamped first, in the next frame.
    st.stroke = { label: st.label, on: st.mode === 'paint', changed: [], lastX: px, lastY: py, x: px, y: py,
      first: true, pending: true, depth: cameraDistance(), busyMs: 0 };
    requestRender();
  }

  function stampAt(px, py) {
    const stroke = st.stroke;
    const t0 = performance.now();
    const hit = pick(px, py);
    if (hit) {
      stroke.depth = hit.t;
      brushVertices(hit, (id) => setMembership(stroke.label, id, stroke.on, stroke.changed));
    }
    st.perf.stampMs = performance.now() - t0;
  }

  /** Applies the brush from the last processed pointer position to the latest one, without gaps. */
  function processStroke() {
    const stroke = st.stroke;
    const t0 = performance.now();
    stroke.pending = false;
    if (stroke.first) {
      stroke.first = false;
      stampAt(stroke.lastX, stroke.lastY);
    }
    const dx = stroke.x - stroke.lastX, dy = stroke.y - stroke.lastY;
    const length = Math.hypot(dx, dy);
    if (length > 0) {
      const spacing = Math.max(1.5, projectedRadiusPx(stroke.depth) * 0.6);
      const steps = Math.min(MAX_SUBSAMPLES, Math.ceil(length / spacing));
      for (let k = 1; k <= steps; k++) stampAt(stroke.lastX + (dx * k) / steps, stroke.lastY + (dy * k) / steps);
    }
    stroke.lastX = stroke.x;
    stroke.lastY = stroke.y;
    stroke.busyMs += performance.now() - t0;
  }

  /** Drops the stroke in progress and restores what it changed (a second finger turned it into a gesture). */
  function cancelStroke() {
    const stroke = st.stroke;
    if (!stroke) return;
    st.stroke = null;
    for (const id of stroke.changed) setMembership(stroke.label, id, !stroke.on, null);
    if (coloursDirty) { st.colours.needsUpdate = true; coloursDirty = false; }
    requestRender();
    refreshUi();
  }

  function endStroke() {
    const stroke = st.stroke;
    if (!stroke) return;
    if (stroke.pending) processStroke();
    st.stroke = null;
    st.perf.strokeMs = stroke.busyMs;
    if (stroke.changed.length) pushHistory({ label: stroke.label, on: stroke.on, ids: Int32Array.from(stroke.changed) });
    if (coloursDirty) { st.colours.needsUpdate = true; coloursDirty = false; }
    renderNow();
    refreshUi();
    emitChange();
  }

  function fillPart(px, py) {
    const mesh = st.mesh;
    if (!mesh || !mesh.partLabels) return;
    const hit = pick(px, py);
    if (!hit) return;
    const ids = mesh.partVertices.get(mesh.partLabels[hit.vertex]);
    const on = st.mode === 'paint';
    const changed = [];
    for (const id of ids) setMembership(st.label, id, on, changed);
    if (changed.length) pushHistory({ label: st.label, on, ids: Int32Array.from(changed) });
    renderNow();
    refreshUi();
    emitChange();
  }

  // ---- history ----
  function pushHistory(entry) {
    st.undo.push(entry);
    if (st.undo.length > 500) st.undo.shift();
    st.redo.length = 0;
  }

  function applyEntry(entry, forward) {
    const on = forward ? entry.on : !entry.on;
    for (const id of entry.ids) setMembership(entry.label, id, on, null);
  }

  // Undo and redo move one entry between the two stacks, replaying it backwards or forwards.
  function moveHistory(from, to, forward) {
    if (!st.ready || st.stroke || !from.length) return false;
    const entry = from.pop();
    applyEntry(entry, forward);
    to.push(entry);
    afterHistory();
    return true;
  }

  function undo() { return moveHistory(st.undo, st.redo, false); }

  function redo() { return moveHistory(st.redo, st.undo, true); }

  function afterHistory() {
    if (coloursDirty) { st.colours.needsUpdate = true; coloursDirty = false; }
    requestRender();
    refreshUi();
    emitChange();
  }

  // ---- colours ----
  const greyLinear = linearColour(GREY);

  function recolourVertex(i) {
    const out = st.colours.array;
    const current = st.layerSets.get(st.label);
    const painted = current && current[i] === 1;
    const colour = st.layerColours.get(st.label);
    let r, g, b;
    if (predictionOn()) {
      const value = st.predictions.get(st.label)[i];
      const k = 3 * Math.round(clamp(value, 0, 1) * 255);
      r = HEAT_LUT[k]; g = HEAT_LUT[k + 1]; b = HEAT_LUT[k + 2];
      if (painted) {
        const s = PAINT_OVER_PREDICTION;
        r += (colour[0] - r) * s; g += (colour[1] - g) * s; b += (colour[2] - b) * s;
      }
    } else if (painted) {
      [r, g, b] = colour;
    } else {
      r = greyLinear[0]; g = greyLinear[1]; b = greyLinear[2];
      let tr = 0, tg = 0, tb = 0, count = 0;
      for (const [label, set] of st.layerSets) {
        if (label === st.label || set[i] !== 1) continue;
        const c = st.layerColours.get(label);
        tr += c[0]; tg += c[1]; tb += c[2]; count++;
      }
      if (count) {
        const s = OTHER_LAYER_TINT;
        r += (tr / count - r) * s; g += (tg / count - g) * s; b += (tb / count - b) * s;
      }
    }
    out[3 * i] = r; out[3 * i + 1] = g; out[3 * i + 2] = b;
  }

  function recolourAll() {
    if (!st.mesh || !st.colours) return;
    for (let i = 0; i < st.mesh.n; i++) recolourVertex(i);
    st.colours.needsUpdate = true;
    requestRender();
  }

  // ---- hover ring ----
  function updateHover() {
    const hover = st.hover;
    hover.pending = false;
    if (!st.ready || st.tool !== 'brush' || st.drag && st.drag.kind !== 'paint') { ring.style.display = 'none'; return; }
    const hit = pick(hover.x, hover.y);
    if (!hit) { ring.style.display = 'none'; canvas.style.cursor = 'default'; return; }
    const size = 2 * projectedRadiusPx(hit.t);
    ring.style.display = 'block';
    ring.style.width = `${size}px`;
    ring.style.height = `${size}px`;
    ring.style.transform = `translate(${hover.x - size / 2}px, ${hover.y - size / 2}px)`;
    ring.style.borderColor = st.mode === 'erase' ? '#111827' : (st.payload.colours[st.label] || '#111827');
    ring.style.borderStyle = st.mode === 'erase' ? 'dashed' : 'solid';
    canvas.style.cursor = 'crosshair';
  }

  function scheduleHover(px, py) {
    st.hover = { x: px, y: py, pending: true };
    requestRender();
  }

  // ---- pointer input ----
  function canvasXY(event) {
    const rect = canvas.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  canvas.addEventListener('contextmenu', (event) => event.preventDefault());
  canvas.addEventListener('mousedown', (event) => { if (event.button === 1) event.preventDefault(); });

  // The painter's own listeners come first; OrbitControls (connected below) sees every press after them.
  canvas.addEventListener('pointerdown', (event) => {
    const touch = event.pointerType === 'touch';
    if (touch) st.touches.add(event.pointerId);
    // A plain left press (or a lone finger) paints; the controls must not orbit with it.
    controls.mouseButtons.LEFT = THREE.MOUSE.ROTATE;
    if (!st.ready) return;
    if (touch && st.touches.size > 1) {
      // A second finger: the touch becomes a camera gesture, and the first finger's stroke is undone.
      if (st.drag && st.drag.touch) {
        if (st.drag.kind === 'paint') cancelStroke();
        st.drag = null;
      }
      ring.style.display = 'none';
      return;
    }
    if (st.drag || event.button !== 0 || event.altKey || event.shiftKey) return; // the controls' press
    controls.mouseButtons.LEFT = null;
    const kind = st.tool === 'brush' ? 'paint' : 'part';
    event.preventDefault();
    canvas.focus({ preventScroll: true });
    try { canvas.setPointerCapture(event.pointerId); } catch (error) { /* synthetic events */ }
    const [x, y] = canvasXY(event);
    st.drag = { kind, pointerId: event.pointerId, x, y, startX: x, startY: y, touch };
    if (kind === 'paint') beginStroke(x, y);
  });

  canvas.addEventListener('pointermove', (event) => {
    const [x, y] = canvasXY(event);
    const drag = st.drag;
    if (drag && event.pointerId === drag.pointerId) {
      drag.x = x; drag.y = y;
      if (drag.kind === 'paint' && st.stroke) {
        st.stroke.x = x; st.stroke.y = y; st.stroke.pending = true;
        scheduleHover(x, y);
      }
      return;
    }
    if (st.ready && event.pointerType !== 'touch' && event.buttons === 0) scheduleHover(x, y);
  });

  function finishDrag(event, cancelled) {
    st.touches.delete(event.pointerId);
    const drag = st.drag;
    if (!drag || event.pointerId !== drag.pointerId) return;
    st.drag = null;
    try { canvas.releasePointerCapture(event.pointerId); } catch (error) { /* not captured */ }
    const [x, y] = canvasXY(event);
    if (drag.kind === 'paint') {
      if (!cancelled && st.stroke) { st.stroke.x = x; st.stroke.y = y; st.stroke.pending = true; }
      endStroke();
      if (drag.touch) ring.style.display = 'none';
    } else if (drag.kind === 'part' && !cancelled) {
      if (Math.hypot(x - drag.startX, y - drag.startY) < CLICK_SLOP_PX) fillPart(x, y);
    }
  }

  canvas.addEventListener('pointerup', (event) => finishDrag(event, false));
  canvas.addEventListener('pointercancel', (event) => finishDrag(event, true));
  canvas.addEventListener('pointerleave', () => { if (!st.drag) ring.style.display = 'none'; });
  controls.addEventListener('start', () => { ring.style.display = 'none'; });
  controls.connect(canvas);

  function isEditable(node) {
    return node && (node.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(node.tagName)) && node.type !== 'range'
      && node.type !== 'checkbox';
  }

  function onKeyDown(event) {
    if (!st.ready || !(event.ctrlKey || event.metaKey)) return;
    const active = document.activeElement;
    if (!(root.contains(active) || active === document.body || active == null)) return;
    if (isEditable(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === 'z' && !event.shiftKey) { event.preventDefault(); undo(); }
    else if ((key === 'z' && event.shiftKey) || key === 'y') { event.preventDefault(); redo(); }
  }
  document.addEventListener('keydown', onKeyDown);

  // ---- toolbar ----
  paintButton.addEventListener('click', () => setMode('paint'));
  eraseButton.addEventListener('click', () => setMode('erase'));
  brushButton.addEventListener('click', () => setTool('brush'));
  partButton.addEventListener('click', () => setTool('part'));
  undoButton.addEventListener('click', () => undo());
  redoButton.addEventListener('click', () => redo());
  viewButton.addEventListener('click', () => frameMesh());
  radiusInput.addEventListener('input', () => setRadius(Number(radiusInput.value)));
  distanceSelect.addEventListener('change', () => setDistance(distanceSelect.value));
  predictionInput.addEventListener('change', () => showPrediction(predictionInput.checked));

  function buildLayerButtons() {
    layerRow.replaceChildren();
    layerButtons.clear();
    element('span', { text: 'Layer', className: 'sp-hint' }, layerRow);
    for (const label of st.payload.labels) {
      const button = element('button', { type: 'button', className: 'sp-layer', dataset: { layer: label } }, layerRow);
      const swatch = element('span', { className: 'sp-swatch' }, button);
      swatch.style.background = st.payload.colours[label];
      element('span', { text: label }, button);
      const count = element('span', { className: 'sp-layer-count' }, button);
      button.title = `Paint into "${label}"`;
      button.addEventListener('click', () => setLayer(label));
      layerButtons.set(label, { button, count });
    }
  }

  function refreshUi() {
    const ready = st.ready;
    for (const [label, { button, count }] of layerButtons) {
      button.classList.toggle('active', label === st.label);
      button.setAttribute('aria-pressed', String(label === st.label));
      count.textContent = String(st.counts.get(label) || 0);
    }
    paintButton.classList.toggle('active', st.mode === 'paint');
    eraseButton.classList.toggle('active', st.mode === 'erase');
    brushButton.classList.toggle('active', st.tool === 'brush');
    partButton.classList.toggle('active', st.tool === 'part');
    const hasParts = Boolean(st.mesh && st.mesh.partLabels);
    partButton.disabled = !hasParts;
    partButton.title = hasParts ? 'Click to fill (or clear) a whole body part' : 'This mesh has no part labels';
    radiusInput.value = String(st.radius);
    radiusValue.textContent = `${(st.radius * 100).toFixed(1)} cm`;
    radiusInput.disabled = st.tool !== 'brush';
    const pointCloud = Boolean(st.mesh && st.mesh.isPointCloud);
    distanceSelect.value = effectiveDistance();
    distanceSelect.disabled = pointCloud || st.tool !== 'brush';
    distanceSelect.title = pointCloud ? 'Point clouds use Euclidean distance' : 'How the brush radius is measured';
    // No task: no tool. With one, paint / erase / brush always work; the others follow their own rules above.
    for (const control of [paintButton, eraseButton, brushButton]) control.disabled = !ready;
    for (const control of [partButton, radiusInput, distanceSelect]) if (!ready) control.disabled = true;
    undoButton.disabled = !ready || !st.undo.length;
    redoButton.disabled = !ready || !st.redo.length;
    viewButton.disabled = !ready;
    const available = predictionAvailable();
    predictionInput.disabled = !available;
    predictionInput.checked = predictionOn();
    predictionField.title = available ? `Show the model's prediction for "${st.label}" as a heat map`
      : `No prediction for "${st.label || ''}"`;
    predictionField.style.opacity = available ? '1' : '0.5';
    legend.style.display = predictionOn() ? 'flex' : 'none';
    if (st.payload) {
      const parts = st.payload.labels.map((label, index) =>
        `${label}: ${st.counts.get(label) || 0}${index === 0 ? ' vertices' : ''}`);
      countsLine.textContent = parts.join(' · ');
    } else {
      countsLine.textContent = '';
    }
    const paintHint = st.tool === 'brush' ? 'left drag or one finger: ' + st.mode
      : 'left click or tap: ' + (st.mode === 'paint' ? 'fill part' : 'clear part');
    hintLine.textContent = `${paintHint} · right drag / Alt: orbit · middle / Shift: pan · wheel: zoom`
      + ' · two fingers: orbit and pinch-zoom';
    controls.enabled = ready;
  }

  // ---- public API ----
  function setLayer(label) {
    if (!st.payload || !st.payload.labels.includes(label)) throw new Error(`unknown layer ${JSON.stringify(label)}`);
    if (label === st.label) return;
    st.label = label;
    recolourAll();
    refreshUi();
  }

  function setMode(mode) {
    if (mode !== 'paint' && mode !== 'erase') throw new Error('mode must be "paint" or "erase"');
    st.mode = mode;
    refreshUi();
  }

  function setTool(tool) {
    if (tool !== 'brush' && tool !== 'part') throw new Error('tool must be "brush" or "part"');
    if (tool === 'part' && st.mesh && !st.mesh.partLabels) return;
    st.tool = tool;
    if (tool !== 'brush') ring.style.display = 'none';
    refreshUi();
  }

  function setRadius(metres) {
    const value = Number(metres);
    if (!Number.isFinite(value)) throw new Error('radius must be a number of metres');
    st.radius = clamp(value, MIN_RADIUS, MAX_RADIUS);
    refreshUi();
    if (st.hover) scheduleHover(st.hover.x, st.hover.y);
  }

  function setDistance(kind) {
    if (kind !== 'geodesic' && kind !== 'euclidean') throw new Error('distance must be "geodesic" or "euclidean"');
    st.distancePref = kind;
    refreshUi();
  }

  function showPrediction(on) {
    st.showPrediction = Boolean(on);
    recolourAll();
    refreshUi();
  }

  function installMesh(mesh) {
    if (st.object) {
      scene.remove(st.object);
      st.geometry.dispose();
    }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute('position', new THREE.BufferAttribute(mesh.positions, 3));
    const colours = new THREE.BufferAttribute(new Float32Array(mesh.n * 3), 3);
    colours.setUsage(THREE.DynamicDrawUsage);
    geometry.setAttribute('color', colours);
    let object;
    if (mesh.isPointCloud) {
      const spacing = Math.cbrt((mesh.size[0] || 1e-3) * (mesh.size[1] || 1e-3) * (mesh.size[2] || 1e-3) / mesh.n);
      pointMaterial.size = clamp(spacing * 1.3, mesh.radius * 0.002, mesh.radius * 0.05);
      object = new THREE.Points(geometry, pointMaterial);
    } else {
      geometry.setIndex(new THREE.BufferAttribute(mesh.faces, 1));
      geometry.computeVertexNormals();
      // The bounds tree reorders the shared index in place (same triangles): face ids stay consistent
      // with mesh.faces, which picking and the brush read.
      geometry.boundsTree = new MeshBVH(geometry);
      object = new THREE.Mesh(geometry, meshMaterial);
      object.raycast = acceleratedRaycast;
    }
    geometry.computeBoundingSphere();
    scene.add(object);
    st.object = object;
    st.geometry = geometry;
    st.colours = colours;
    st.projected = null;
    st.projectedVersion = -1;
  }

  async function load(input) {
    const token = ++st.loadToken;
    st.loading = true;
    try {
      const payload = parsePayload(input);
      st.ready = false;
      container.dataset.ready = '0';
      showMessage('Loading mesh…');
      const [mesh, annotation] = await Promise.all([
        fetchMesh(payload.meshUrl), payload.annotationUrl ? fetchAnnotation(payload.annotationUrl) : null]);
      if (token !== st.loadToken || st.destroyed) return false; // a newer load() superseded this one
      if (annotation) {
        if (annotation.layers && typeof annotation.layers === 'object') payload.layers = annotation.layers;
        if (annotation.prediction && typeof annotation.prediction === 'object') payload.prediction = annotation.prediction;
      }
      // Colours, layers and predictions for this mesh.
      const colours = {};
      payload.labels.forEach((label, index) => {
        const given = payload.colours[label];
        colours[label] = validHex(given) ? given : FALLBACK_PALETTE[index % FALLBACK_PALETTE.length];
      });
      payload.colours = colours;
      const layerSets = new Map(), counts = new Map(), layerColours = new Map(), predictions = new Map();
      const dropped = [];
      for (const label of payload.labels) {
        const set = new Uint8Array(mesh.n);
        let count = 0;
        const ids = payload.layers[label];
        if (ids != null) {
          if (!Array.isArray(ids)) fail(`layer ${JSON.stringify(label)} must be a list of vertex ids`);
          for (const id of ids) {
            if (!Number.isInteger(id) || id < 0 || id >= mesh.n) { dropped.push(id); continue; }
            if (!set[id]) { set[id] = 1; count++; }
          }
        }
        layerSets.set(label, set);
        counts.set(label, count);
        layerColours.set(label, linearColour(colours[label]));
        const values = payload.prediction[label];
        if (Array.isArray(values) && values.length === mesh.n) {
          predictions.set(label, Float32Array.from(values, (value) => (Number.isFinite(value) ? value : 0)));
        } else if (values != null) {
          console.warn(`studio painter: prediction for ${JSON.stringify(label)} has ${values && values.length} values for ${mesh.n} vertices; ignored`);
        }
      }
      if (dropped.length) console.warn(`studio painter: ignored ${dropped.length} out-of-range vertex ids in the initial layers`);
      if (payload.topology && mesh.topology && payload.topology !== mesh.topology) {
        console.warn(`studio painter: payload topology ${payload.topology} differs from the mesh's ${mesh.topology}`);
      }
      if (st.stroke) st.stroke = null;
      st.drag = null;
      st.payload = payload;
      st.mesh = mesh;
      st.layerSets = layerSets;
      st.counts = counts;
      st.layerColours = layerColours;
      st.predictions = predictions;
      st.label = payload.labels[0];
      st.mode = 'paint';
      if (st.tool === 'part' && !mesh.partLabels) st.tool = 'brush';
      st.undo = [];
      st.redo = [];
      installMesh(mesh);
      buildLayerButtons();
      resize();
      frameMesh();
      recolourAll();
      showMessage('');
      st.ready = true;
      st.loadedAt = performance.now();
      refreshUi();
      if (st.frame) { cancelAnimationFrame(st.frame); st.frame = 0; }
      renderNow();
      container.dataset.task = String(payload.taskId);
      container.dataset.ready = '1';
      return true;
    } catch (error) {
      if (token === st.loadToken) {
        st.ready = false;
        container.dataset.ready = '0';
        showError(`Cannot load the painter: ${error.message || error}`);
        refreshUi();
      }
      throw error;
    } finally {
      if (token === st.loadToken) st.loading = false;
    }
  }

  /** Drops the task (there is none now): no mesh, no layers, every tool disabled, `message` shown. */
  function unload(message = 'No task right now.') {
    ++st.loadToken; // a load still in flight is superseded
    st.ready = false;
    st.loading = false;
    container.dataset.ready = '0';
    delete container.dataset.task;
    if (st.object) {
      scene.remove(st.object);
      st.geometry.dispose();
      st.object = null; st.geometry = null; st.colours = null;
    }
    st.payload = null; st.mesh = null; st.stroke = null; st.drag = null; st.label = null;
    st.layerSets = new Map(); st.counts = new Map(); st.predictions = new Map(); st.undo = []; st.redo = [];
    layerRow.replaceChildren();
    layerButtons.clear();
    ring.style.display = 'none';
    showMessage(message);
    refreshUi();
    renderNow();
  }

  function layers() {
    const out = {};
    if (!st.payload) return out;
    for (const label of st.payload.labels) {
      const set = st.layerSets.get(label);
      const ids = [];
      for (let i = 0; i < set.length; i++) if (set[i]) ids.push(i);
      out[label] = ids;
    }
    return out;
  }

  function state() {
    return {
      ready: st.ready,
      taskId: st.payload ? st.payload.taskId : null,
      check: st.payload ? st.payload.check : null,
      topology: st.payload ? (st.payload.topology || (st.mesh && st.mesh.topology) || null) : null,
      kind: st.payload ? st.payload.kind : null,
      label: st.label,
      mode: st.mode,
      tool: st.tool,
      radius: st.radius,
      distance: effectiveDistance(),
      showPrediction: predictionOn(),
      predictionAvailable: predictionAvailable(),
      counts: countsObject(),
      undo: st.undo.length,
      redo: st.redo.length,
      secondsActive: st.payload ? (performance.now() - st.loadedAt) / 1000 : 0,
      vertices: st.mesh ? st.mesh.n : 0,
      pointCloud: Boolean(st.mesh && st.mesh.isPointCloud),
      perf: { ...st.perf },
    };
  }

  function requireReady() {
    if (!st.ready) throw new Error('the painter has no mesh loaded');
  }

  function screenPosition(vertexId) {
    requireReady();
    const id = Number(vertexId);
    if (!Number.isInteger(id) || id < 0 || id >= st.mesh.n) throw new RangeError(`vertex id ${vertexId} is out of range`);
    const rect = canvas.getBoundingClientRect();
    const p = st.mesh.positions;
    const world = new THREE.Vector3(p[3 * id], p[3 * id + 1], p[3 * id + 2]);
    const ndc = world.clone().project(camera);
    const x = rect.left + (ndc.x + 1) * 0.5 * rect.width;
    const y = rect.top + (1 - ndc.y) * 0.5 * rect.height;
    const inView = Math.abs(ndc.x) <= 1 && Math.abs(ndc.y) <= 1 && ndc.z >= -1 && ndc.z <= 1;
    let visible = false;
    if (inView) {
      const distance = world.distanceTo(camera.position);
      const tolerance = Math.max(1e-4, st.mesh.radius * 0.004);
      if (st.mesh.isPointCloud) {
        const proj = projectedPoints();
        const px = proj[3 * id], py = proj[3 * id + 1], depth = proj[3 * id + 2];
        const reach = Math.max(2, 0.5 * pointPixelSize(depth));
        visible = true;
        for (let i = 0; i < st.mesh.n && visible; i++) {
          const dx = proj[3 * i] - px, dy = proj[3 * i + 1] - py;
          if (dx * dx + dy * dy <= reach * reach && proj[3 * i + 2] < depth - tolerance) visible = false;
        }
      } else {
        const direction = world.clone().sub(camera.position).normalize();
        const hit = raycastMesh(camera.position, direction);
        visible = !hit || hit.t >= distance - tolerance;
      }
    }
    return { x, y, visible };
  }

  /** The surface point under a page point (client px): {vertex, point: [x, y, z], distance} or null. */
  function pickAt(clientX, clientY) {
    requireReady();
    const rect = canvas.getBoundingClientRect();
    const hit = pick(Number(clientX) - rect.left, Number(clientY) - rect.top);
    return hit ? { vertex: hit.vertex, point: hit.point, distance: hit.t } : null;
  }

  function cameraInfo() {
    const rect = canvas.getBoundingClientRect();
    const vp = new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse);
    return { viewProjection: Array.from(vp.elements), rect: { left: rect.left, top: rect.top, width: rect.width, height: rect.height } };
  }

  const observer = new ResizeObserver(() => {
    if (st.destroyed) return;
    resize();
  });
  observer.observe(view);
  resize();
  refreshUi();

  function destroy() {
    st.destroyed = true;
    observer.disconnect();
    document.removeEventListener('keydown', onKeyDown);
    controls.dispose();
    if (st.frame) cancelAnimationFrame(st.frame);
    if (st.geometry) { if (st.geometry.boundsTree) st.geometry.boundsTree = null; st.geometry.dispose(); }
    meshMaterial.dispose();
    if (pointMaterial.map) pointMaterial.map.dispose();
    pointMaterial.dispose();
    renderer.dispose();
    container.replaceChildren();
    delete container.dataset.ready;
    if (window.studioPainter === painter) window.studioPainter = undefined;
  }

  const painter = {
    load, unload, layers, state, setLayer, setMode, setTool, setRadius, setDistance, undo, redo, showPrediction,
    screenPosition, pickAt, camera: cameraInfo, resetView: frameMesh, destroy, container,
  };
  window.studioPainter = painter;
  return painter;
}
