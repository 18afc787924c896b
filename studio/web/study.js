// Interaction Studio: the participant page of a perceptual A/B study.
//
// Talks to /study/<slug>/api/* with the participant's token (kept in memory only: a reload joins again
// with the link's pid and resumes at the same trial). The page knows trials by opaque keys and sides as
// shown ("left" / "right", or "top" / "bottom" when the pair is stacked on a narrow screen); it never
// learns which method is on which side. Keys: <- / -> pick a side, 1-5 rate.

const slug = decodeURIComponent(location.pathname.replace(/\/+$/, '').split('/').pop());
const params = new URLSearchParams(location.search);
const api = (path) => `/study/${encodeURIComponent(slug)}/api/${path}`;
const $ = (id) => document.getElementById(id);
const narrow = window.matchMedia('(max-width: 700px)');

const state = { token: null, texts: null, trial: null, shownAt: 0, picked: null, ratings: { left: null, right: null },
                busy: false, timer: null, viewers: [], done: false, completionCode: null };

function showError(message) { $('status').textContent = message || ''; }

async function call(path, options = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (state.token) headers['X-Study-Token'] = state.token;
  const response = await fetch(api(path), { ...options, headers });
  let body = {};
  try { body = await response.json(); } catch (error) { body = {}; }
  if (!response.ok) throw new Error(body.error || body.detail || 'the server could not answer; try again');
  return body;
}

function paragraphs(container, text) {
  container.replaceChildren(...String(text || '').split(/\n\s*\n/).filter((t) => t.trim()).map((t) => {
    const p = document.createElement('p');
    p.textContent = t.trim();
    return p;
  }));
}

function sideName(side) {
  if (narrow.matches) return side === 'left' ? 'top' : 'bottom';
  return side;
}

function labelButtons() {
  for (const side of ['left', 'right']) {
    const name = sideName(side);
    $(`choose-${side}`).textContent = `${name[0].toUpperCase()}${name.slice(1)} is better`;
  }
  const likert = state.texts && state.texts.likert;
  const arrows = narrow.matches ? '\u2190 top, \u2192 bottom' : '\u2190 left, \u2192 right';
  $('keys').textContent = `Keys: ${arrows}` + (likert && likert !== 'none' ? '; 1\u20135 rate.' : '.');
}
narrow.addEventListener('change', labelButtons);

async function start() {
  const pid = params.get('pid') || params.get('PROLIFIC_PID') || params.get('workerId');
  if (!pid) { showError('Open this page with the link you were given (it carries your participant id).'); return; }
  const joined = await call('join', { method: 'POST', body: JSON.stringify({
    pid, session: params.get('session') || params.get('SESSION_ID') || params.get('assignmentId') || pid,
    sig: params.get('sig'), consent: false }) });
  applyTexts(joined);
  if (joined.needs_consent) {
    paragraphs($('consent-text'), joined.consent || 'By continuing you agree to take part in this study.');
    paragraphs($('instructions-text'), joined.instructions);
    $('consent-box').classList.remove('hidden');
    $('consent-agree').onclick = async () => {
      $('consent-agree').disabled = true;
      try {
        const agreed = await call('join', { method: 'POST', body: JSON.stringify({
          pid, session: params.get('session') || params.get('SESSION_ID') || params.get('assignmentId') || pid,
          sig: params.get('sig'), consent: true }) });
        state.token = agreed.token;
        $('consent-box').classList.add('hidden');
        await nextTrial();
      } catch (error) { showError(error.message); $('consent-agree').disabled = false; }
    };
    return;
  }
  state.token = joined.token;
  await nextTrial();
}

function applyTexts(texts) {
  state.texts = texts;
  document.title = texts.title;
  $('title').textContent = texts.title;
  $('question').textContent = texts.question;
  labelButtons();
}

async function nextTrial() { render(await call('trial')); }

function render(payload) {
  clearTimer();
  disposeViewers();
  if (payload.done) { finish(payload); return; }
  const trial = payload.trial;
  state.trial = trial;
  state.picked = null;
  state.ratings = { left: null, right: null };
  $('trial-box').classList.remove('hidden');
  $('progress').textContent = `Item ${trial.position} of ${trial.total}`;
  $('reference-box').classList.toggle('hidden', !trial.reference);
  if (trial.reference) $('reference').src = trial.reference;
  for (const side of ['left', 'right']) {
    $(`side-${side}`).classList.remove('picked');
    mount($(`stage-${side}`), trial.media, trial[side]);
    buildRating(side);
  }
  setBusy(false);
  state.shownAt = performance.now();
  startTimer();
}

function mount(stage, media, url) {
  stage.replaceChildren();
  if (media === 'image') {
    const img = document.createElement('img');
    img.src = url;
    img.alt = 'result';
    stage.append(img);
  } else if (media === 'video') {
    const video = document.createElement('video');
    Object.assign(video, { src: url, autoplay: true, loop: true, muted: true, playsInline: true, controls: true });
    stage.append(video);
  } else {
    mountModel(stage, url).catch(() => showError('This 3D view could not load; the other side still counts.'));
  }
}

async function mountModel(stage, url) {
  const THREE = await import('three');
  const { GLTFLoader } = await import('three/addons/loaders/GLTFLoader.js');
  const { OrbitControls } = await import('three/addons/controls/OrbitControls.js');
  const renderer = new THREE.WebGLRenderer({ antialias: true });
  const rect = stage.getBoundingClientRect();
  renderer.setSize(Math.max(rect.width, 64), Math.max(rect.height, 64));
  stage.append(renderer.domElement);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color('#f3f4f6');
  scene.add(new THREE.HemisphereLight(0xffffff, 0x666666, 2.2), new THREE.AmbientLight(0xffffff, 0.6));
  const sun = new THREE.DirectionalLight(0xffffff, 1.5);
  sun.position.set(2, 3, 4);
  scene.add(sun);
  const gltf = await new GLTFLoader().loadAsync(url);
  scene.add(gltf.scene);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length() || 1;
  const camera = new THREE.PerspectiveCamera(35, rect.width / Math.max(rect.height, 1), size / 100, size * 10);
  camera.position.copy(centre).add(new THREE.Vector3(0, size * 0.2, size * 1.4));
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.target.copy(centre);
  controls.update();
  const draw = () => renderer.render(scene, camera);
  controls.addEventListener('change', draw);
  draw();
  state.viewers.push({ renderer, controls });
}

function disposeViewers() {
  for (const viewer of state.viewers) { viewer.controls.dispose(); viewer.renderer.dispose(); }
  state.viewers = [];
}

function buildRating(side) {
  const box = $(`rating-${side}`);
  const mode = state.texts.likert;
  box.classList.toggle('hidden', mode !== 'both');
  box.replaceChildren();
  if (mode === 'none') return;
  const label = document.createElement('span');
  label.className = 'hint';
  label.textContent = state.texts.likert_question;
  box.append(label);
  for (let value = 1; value <= 5; value += 1) {
    const button = document.createElement('button');
    button.textContent = String(value);
    button.dataset.rating = String(value);
    button.id = `rate-${side}-${value}`;
    button.onclick = () => rate(side, value);
    box.append(button);
  }
}

function rate(side, value) {
  if (state.busy || !state.trial) return;
  state.ratings[side] = value;
  for (const button of $(`rating-${side}`).querySelectorAll('button')) {
    button.classList.toggle('on', Number(button.dataset.rating) === value);
  }
  const mode = state.texts.likert;
  if (mode === 'chosen' && state.picked === side) submit(side);
  if (mode === 'both' && state.picked && state.ratings.left && state.ratings.right) submit(state.picked);
}

function pick(side) {
  if (state.busy || !state.trial) return;
  const mode = state.texts.likert;
  state.picked = side;
  for (const other of ['left', 'right']) $(`side-${other}`).classList.toggle('picked', other === side);
  if (mode === 'none') { submit(side); return; }
  if (mode === 'chosen') {
    for (const other of ['left', 'right']) $(`rating-${other}`).classList.toggle('hidden', other !== side);
    if (state.ratings[side]) submit(side); else showError(`Now rate the ${sideName(side)} result (1\u20135).`);
    return;
  }
  if (state.ratings.left && state.ratings.right) submit(side);
  else showError('Rate both results (1\u20135) as well.');
}

function digit(value) {
  const mode = state.texts && state.texts.likert;
  if (!state.trial || mode === 'none') return;
  if (mode === 'chosen') { if (state.picked) rate(state.picked, value); return; }
  rate(state.ratings.left ? 'right' : 'left', value);
}

async function submit(side, timedOut = false) {
  if (state.busy) return;
  setBusy(true);
  showError('');
  const mode = state.texts.likert;
  const body = { trial: state.trial.key, choice: timedOut ? 'timeout' : side,
                 client_seconds: (performance.now() - state.shownAt) / 1000 };
  if (!timedOut && mode === 'both') { body.likert_left = state.ratings.left; body.likert_right = state.ratings.right; }
  if (!timedOut && mode === 'chosen') body[`likert_${side}`] = state.ratings[side];
  try {
    render(await call('respond', { method: 'POST', body: JSON.stringify(body) }));
  } catch (error) {
    showError(error.message);
    setBusy(false);
  }
}

function setBusy(busy) {
  state.busy = busy;
  for (const button of document.querySelectorAll('#trial-box button')) button.disabled = busy;
}

function startTimer() {
  const limit = state.texts.time_limit_s;
  if (!limit) { $('timer').textContent = ''; return; }
  const deadline = performance.now() + limit * 1000;
  const tick = () => {
    const left = Math.max(0, (deadline - performance.now()) / 1000);
    $('timer').textContent = `${left.toFixed(0)} s left`;
    if (left <= 0) { clearTimer(); submit(null, true); }
  };
  tick();
  state.timer = setInterval(tick, 250);
}

function clearTimer() { if (state.timer) clearInterval(state.timer); state.timer = null; }

function finish(payload) {
  state.busy = false;
  state.trial = null;
  state.done = true;
  state.completionCode = payload.completion_code;
  $('trial-box').classList.add('hidden');
  $('done-box').classList.remove('hidden');
  $('completion-code').textContent = payload.completion_code;
  if (payload.redirect_url) {
    $('redirect').href = payload.redirect_url;
    $('redirect-box').classList.remove('hidden');
  }
}

document.addEventListener('keydown', (event) => {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') { event.preventDefault(); pick('left'); }
  else if (event.key === 'ArrowRight' || event.key === 'ArrowDown') { event.preventDefault(); pick('right'); }
  else if (/^[1-5]$/.test(event.key)) digit(Number(event.key));
});
for (const side of ['left', 'right']) $(`choose-${side}`).addEventListener('click', () => pick(side));

window.studyPage = {
  state: () => ({ key: state.trial && state.trial.key, position: state.trial && state.trial.position,
                  total: state.trial && state.trial.total, busy: state.busy, done: state.done,
                  completionCode: state.completionCode, picked: state.picked }),
};

start().catch((error) => showError(error.message));
