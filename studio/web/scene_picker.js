// Interaction Studio: pick a point on a scene mesh (the GenZI tab).
//
// An ES module with no bundler, like painter.js: three.js comes from the same served build.
// `createScenePicker(container)` makes a WebGL canvas; `picker.load({url, name, point})` fetches the
// scene's binary mesh (uint32 vertex and face counts, float32 vertices, uint32 faces; little endian)
// and frames it. Left drag orbits, the wheel zooms, a left click (moving less than a few pixels)
// casts a ray into the scene: the hit is marked, kept as `picker.picked()` and announced with a
// 'scene-pick' event on the container. `picker.mark([x, y, z])` moves the marker (a typed point).

import * as THREE from './three/three.module.js';

const CLICK_SLOP_PX = 5;
const BACKGROUND = '#eef1f5';
const FOV = 50;

function parseMesh(buffer) {
  if (buffer.byteLength < 8) throw new Error('the scene mesh is empty');
  const [vertexCount, faceCount] = new Uint32Array(buffer, 0, 2);
  const expected = 8 + vertexCount * 12 + faceCount * 12;
  if (buffer.byteLength !== expected) throw new Error('the scene mesh is truncated');
  const positions = new Float32Array(buffer, 8, vertexCount * 3);
  const index = new Uint32Array(buffer, 8 + vertexCount * 12, faceCount * 3);
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute('position', new THREE.BufferAttribute(positions, 3));
  geometry.setIndex(new THREE.BufferAttribute(index, 1));
  geometry.computeVertexNormals();
  geometry.computeBoundingSphere();
  return geometry;
}

export function createScenePicker(container) {
  container.style.position = 'relative';
  container.style.width = '100%';
  container.style.height = '420px';
  const canvas = document.createElement('canvas');
  canvas.style.cssText = 'display:block;width:100%;height:100%;touch-action:none;outline:none;cursor:crosshair';
  const status = document.createElement('div');
  status.className = 'ssp-status';
  status.style.cssText = 'position:absolute;left:8px;bottom:6px;font:12px system-ui,sans-serif;color:#374151;' +
    'background:rgba(255,255,255,.85);padding:2px 6px;border-radius:4px;pointer-events:none';
  status.textContent = 'load a scene';
  container.append(canvas, status);

  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(BACKGROUND);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x8a8f99, 2.2));
  const sun = new THREE.DirectionalLight(0xffffff, 1.4);
  sun.position.set(3, 6, 4);
  scene.add(sun);
  const camera = new THREE.PerspectiveCamera(FOV, 1, 0.01, 1000);
  const marker = new THREE.Mesh(new THREE.SphereGeometry(1, 16, 12), new THREE.MeshBasicMaterial({ color: 0xe6194b }));
  marker.visible = false;
  scene.add(marker);
  const raycaster = new THREE.Raycaster();
  const orbit = { target: new THREE.Vector3(), radius: 5, azimuth: 0.6, elevation: 0.6 };
  let mesh = null;
  let picked = null;
  let frame = 0;

  function placeCamera() {
    const { target, radius, azimuth, elevation } = orbit;
    camera.position.set(target.x + radius * Math.cos(elevation) * Math.sin(azimuth),
                        target.y + radius * Math.sin(elevation),
                        target.z + radius * Math.cos(elevation) * Math.cos(azimuth));
    camera.lookAt(target);
    camera.near = radius / 200;
    camera.far = radius * 20;
    camera.updateProjectionMatrix();
  }

  function draw() {
    frame = 0;
    const width = container.clientWidth || 1;
    const height = container.clientHeight || 1;
    if (canvas.width !== Math.round(width * renderer.getPixelRatio())) renderer.setSize(width, height, false);
    camera.aspect = width / height;
    placeCamera();
    renderer.render(scene, camera);
  }

  function request() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function setMarker(point) {
    if (!mesh) return;
    marker.position.set(point[0], point[1], point[2]);
    marker.scale.setScalar(Math.max(mesh.geometry.boundingSphere.radius * 0.012, 0.02));
    marker.visible = true;
    request();
  }

  function rayHit(event) {
    const rect = canvas.getBoundingClientRect();
    const ndc = new THREE.Vector2(((event.clientX - rect.left) / rect.width) * 2 - 1,
                                  -((event.clientY - rect.top) / rect.height) * 2 + 1);
    placeCamera();
    raycaster.setFromCamera(ndc, camera);
    const hits = mesh ? raycaster.intersectObject(mesh, false) : [];
    return hits.length ? hits[0].point : null;
  }

  let press = null;
  canvas.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    press = { x: event.clientX, y: event.clientY, azimuth: orbit.azimuth, elevation: orbit.elevation, moved: false };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener('pointermove', (event) => {
    if (!press) return;
    const dx = event.clientX - press.x;
    const dy = event.clientY - press.y;
    if (Math.hypot(dx, dy) >= CLICK_SLOP_PX) press.moved = true;
    if (!press.moved) return;
    orbit.azimuth = press.azimuth - dx * 0.01;
    orbit.elevation = Math.min(1.5, Math.max(-0.2, press.elevation + dy * 0.01));
    request();
  });
  canvas.addEventListener('pointerup', (event) => {
    if (!press) return;
    const click = !press.moved;
    press = null;
    if (!click || !mesh) return;
    const hit = rayHit(event);
    if (!hit) {
      status.textContent = 'no surface under the cursor; click on the scene';
      return;
    }
    picked = [hit.x, hit.y, hit.z];
    setMarker(picked);
    status.textContent = 'picked ' + picked.map((v) => v.toFixed(3)).join(', ');
    container.dispatchEvent(new CustomEvent('scene-pick', { detail: { point: picked } }));
  });
  canvas.addEventListener('wheel', (event) => {
    event.preventDefault();
    orbit.radius = Math.min(500, Math.max(0.2, orbit.radius * Math.exp(event.deltaY * 0.001)));
    request();
  }, { passive: false });
  new ResizeObserver(request).observe(container);

  async function load(payload) {
    container.dataset.ready = '0';
    status.textContent = 'loading ' + (payload.name || 'the scene') + ' ...';
    try {
      const response = await fetch(payload.url, { credentials: 'same-origin' });
      if (!response.ok) throw new Error('the scene is no longer on the server; load it again');
      const geometry = parseMesh(await response.arrayBuffer());
      if (mesh) {
        scene.remove(mesh);
        mesh.geometry.dispose();
      }
      mesh = new THREE.Mesh(geometry, new THREE.MeshLambertMaterial({ color: 0xc8c8c8, side: THREE.DoubleSide }));
      scene.add(mesh);
      const sphere = geometry.boundingSphere;
      orbit.target.copy(payload.point ? new THREE.Vector3(...payload.point) : sphere.center);
      orbit.radius = sphere.radius * 1.2;
      orbit.azimuth = 0.35;
      orbit.elevation = 0.75;
      picked = null;
      marker.visible = false;
      if (payload.point) setMarker(payload.point);
      status.textContent = (payload.name || 'scene') + ': click to pick the point, drag to turn, wheel to zoom';
      container.dataset.ready = '1';
      container.dataset.scene = payload.name || '';
      draw();
    } catch (error) {
      status.textContent = String(error.message || error);
      container.dataset.ready = 'error';
    }
  }

  function cameraState() {
    placeCamera();
    const rect = canvas.getBoundingClientRect();
    const matrix = new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse);
    return { viewProjection: matrix.elements.slice(),
             rect: { left: rect.left, top: rect.top, width: rect.width, height: rect.height } };
  }

  return { load, mark: setMarker, picked: () => picked, camera: cameraState };
}
