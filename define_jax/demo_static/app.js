// DeFINe browser demo: paint a mask over a photo, send both to /api/inpaint, show results.
// Plain JavaScript, no libraries, nothing loaded from the network.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const MASK_COLOUR = '#ff2d78';  // Shown at the overlay canvas's CSS opacity.
  const MAX_UNDO = 12;

  const el = {
    file: $('file'), examples: $('examples'), modelInfo: $('model-info'),
    brush: $('tool-brush'), eraser: $('tool-eraser'), size: $('brush-size'),
    sizeValue: $('brush-size-value'), undo: $('undo'), clear: $('clear'),
    stageBox: $('stage-box'), stage: $('stage'), photo: $('photo'), mask: $('mask'),
    cursor: $('cursor'), inpaint: $('inpaint'), again: $('again'), status: $('status'),
    notice: $('notice'), masked: $('masked'), output: $('output'), composite: $('composite'),
    telea: $('telea'), passLabel: $('pass-label'), download: $('download'),
    useResult: $('use-result'), timing: $('timing'), grid: document.querySelector('.results .grid'),
  };
  const photoCtx = el.photo.getContext('2d');
  const maskCtx = el.mask.getContext('2d', { willReadFrequently: true });

  const state = {
    info: null,
    photo: null,        // {url, width, height, name}
    tool: 'brush',
    undo: [],
    drawing: false,
    last: null,
    result: null,       // the last /api/inpaint response
    passes: 0,
    maskChangedSinceResult: false,
    busy: false,
    lastTimings: null,  // {browser_s, network_s, telea_s, total_s}
  };

  // --- Messages --------------------------------------------------------------------------

  function setStatus(text) { el.status.textContent = text || ''; }

  function showNotice(messages, kind) {
    const list = (Array.isArray(messages) ? messages : [messages]).filter(Boolean);
    el.notice.hidden = list.length === 0;
    el.notice.className = `notice ${kind || 'info'}`;
    el.notice.replaceChildren(...list.map((m) => {
      const p = document.createElement('p');
      p.textContent = m;
      return p;
    }));
  }

  async function readJSON(response) {
    let data = null;
    try { data = await response.json(); } catch (e) { /* not JSON */ }
    if (!response.ok) {
      throw new Error((data && data.error) || `The server answered ${response.status} ${response.statusText}.`);
    }
    if (!data) throw new Error('The server sent an unreadable answer.');
    return data;
  }

  async function request(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new Error('Cannot reach the demo server: is it still running?');
    }
    return readJSON(response);
  }

  // --- Controls --------------------------------------------------------------------------

  function updateControls() {
    const hasPhoto = !!state.photo;
    const idle = !state.busy;
    el.inpaint.disabled = !(hasPhoto && idle);
    el.again.disabled = !(idle && state.result && state.result.composite && state.result.output
                          && !state.maskChangedSinceResult);
    el.again.title = state.maskChangedSinceResult
      ? 'The mask changed since the result: press Inpaint first'
      : 'A second pass of the network over the result (same mask)';
    el.undo.disabled = !(idle && state.undo.length);
    el.clear.disabled = !(idle && hasPhoto);
    el.useResult.disabled = !(idle && state.result && state.result.composite);
    const canDownload = !!(state.result && state.result.composite);
    el.download.classList.toggle('disabled', !canDownload);
    el.download.setAttribute('aria-disabled', String(!canDownload));
    el.file.disabled = !idle;
    document.querySelectorAll('.examples button').forEach((b) => { b.disabled = !idle; });
    document.body.dataset.busy = String(state.busy);
    document.body.dataset.passes = String(state.passes);
  }

  function setBusy(busy, text) {
    state.busy = busy;
    el.stage.classList.toggle('busy', busy);
    if (text !== undefined) setStatus(text);
    updateControls();
  }

  function setTool(tool) {
    state.tool = tool;
    el.brush.classList.toggle('active', tool === 'brush');
    el.eraser.classList.toggle('active', tool === 'eraser');
    el.brush.setAttribute('aria-checked', String(tool === 'brush'));
    el.eraser.setAttribute('aria-checked', String(tool === 'eraser'));
    el.cursor.classList.toggle('eraser', tool === 'eraser');
  }

  function brushSize() { return Number(el.size.value); }

  function setBrushSize(value) {
    el.size.value = String(Math.max(Number(el.size.min), Math.min(Number(el.size.max), value)));
    el.sizeValue.textContent = el.size.value;
    el.cursor.style.width = el.cursor.style.height = `${brushSize()}px`;
  }

  // --- Photo -----------------------------------------------------------------------------

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error('The browser could not display the photo.'));
      image.src = url;
    });
  }

  function fitStage() {
    if (!state.photo) return;
    const { width, height } = state.photo;
    const boxWidth = el.stageBox.clientWidth;
    const maxHeight = Math.max(240, window.innerHeight * 0.62);
    const scale = Math.min(boxWidth / width, maxHeight / height, 4);
    const w = Math.round(width * scale);
    const h = Math.round(height * scale);
    for (const canvas of [el.photo, el.mask]) {
      canvas.style.width = `${w}px`;
      canvas.style.height = `${h}px`;
    }
    el.stage.style.width = `${w}px`;
    el.stage.style.height = `${h}px`;
  }

  function clearResults() {
    state.result = null;
    state.passes = 0;
    state.maskChangedSinceResult = false;
    for (const img of [el.masked, el.output, el.composite, el.telea]) {
      img.removeAttribute('src');
      img.parentElement.classList.add('empty');
    }
    el.passLabel.textContent = '';
    el.download.removeAttribute('href');
    el.timing.textContent = '';
  }

  async function setPhoto(data, name) {
    const image = await loadImage(data.image);
    state.photo = { url: data.image, width: data.width, height: data.height, name: name || 'photo' };
    el.photo.width = el.mask.width = data.width;
    el.photo.height = el.mask.height = data.height;
    photoCtx.drawImage(image, 0, 0);
    maskCtx.clearRect(0, 0, data.width, data.height);
    state.undo = [];
    el.stage.classList.remove('empty');
    el.grid.style.setProperty('--aspect', `${data.width} / ${data.height}`);
    clearResults();
    fitStage();
    showNotice(data.notes || [], 'info');
    setStatus(`${state.photo.name}: ${data.width}×${data.height}. Paint over what should disappear.`);
    updateControls();
  }

  async function uploadFile(file) {
    if (!file || state.busy) return;
    const limit = state.info ? state.info.max_upload_mib * 2 ** 20 : Infinity;
    if (file.size > limit) {
      showNotice(`${file.name} is ${(file.size / 2 ** 20).toFixed(0)} MiB; the demo accepts at most ${state.info.max_upload_mib} MiB.`, 'error');
      return;
    }
    setBusy(true, `Reading ${file.name}…`);
    try {
      const data = await request('/api/image', {
        method: 'POST',
        headers: { 'Content-Type': 'application/octet-stream', 'X-Filename': encodeURIComponent(file.name) },
        body: file,
      });
      setBusy(false);
      await setPhoto(data, file.name);
    } catch (error) {
      setBusy(false, '');
      showNotice(error.message, 'error');
    }
  }

  async function loadExample(example) {
    if (state.busy) return;
    setBusy(true, `Loading ${example.title}…`);
    try {
      const data = await request(`/api/examples/${example.id}`);
      setBusy(false);
      await setPhoto(data, example.title);
    } catch (error) {
      setBusy(false, '');
      showNotice(error.message, 'error');
    }
  }

  // --- Brush -----------------------------------------------------------------------------

  function toImage(event) {
    const rect = el.mask.getBoundingClientRect();
    const scale = el.mask.width / rect.width;
    return { x: (event.clientX - rect.left) * scale, y: (event.clientY - rect.top) * scale, scale };
  }

  function paint(from, to) {
    maskCtx.save();
    maskCtx.globalCompositeOperation = state.tool === 'eraser' ? 'destination-out' : 'source-over';
    maskCtx.strokeStyle = maskCtx.fillStyle = MASK_COLOUR;
    const width = brushSize() * to.scale;
    if (!from) {
      maskCtx.beginPath();
      maskCtx.arc(to.x, to.y, width / 2, 0, 2 * Math.PI);
      maskCtx.fill();
    } else {
      maskCtx.lineWidth = width;
      maskCtx.lineCap = 'round';
      maskCtx.lineJoin = 'round';
      maskCtx.beginPath();
      maskCtx.moveTo(from.x, from.y);
      maskCtx.lineTo(to.x, to.y);
      maskCtx.stroke();
    }
    maskCtx.restore();
  }

  function pushUndo() {
    state.undo.push(maskCtx.getImageData(0, 0, el.mask.width, el.mask.height));
    if (state.undo.length > MAX_UNDO) state.undo.shift();
  }

  function maskEdited() {
    if (state.result) state.maskChangedSinceResult = true;
    updateControls();
  }

  function moveCursor(event) {
    const rect = el.stage.getBoundingClientRect();
    el.cursor.style.left = `${event.clientX - rect.left}px`;
    el.cursor.style.top = `${event.clientY - rect.top}px`;
  }

  el.mask.addEventListener('pointerdown', (event) => {
    if (!state.photo || state.busy || event.button !== 0) return;
    event.preventDefault();
    el.mask.setPointerCapture(event.pointerId);
    pushUndo();
    state.drawing = true;
    state.last = toImage(event);
    paint(null, state.last);
  });
  el.mask.addEventListener('pointermove', (event) => {
    moveCursor(event);
    if (!state.drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of (events.length ? events : [event])) {
      const point = toImage(e);
      paint(state.last, point);
      state.last = point;
    }
  });
  const endStroke = () => {
    if (!state.drawing) return;
    state.drawing = false;
    state.last = null;
    maskEdited();
  };
  el.mask.addEventListener('pointerup', endStroke);
  el.mask.addEventListener('pointercancel', endStroke);
  el.mask.addEventListener('pointerenter', (event) => {
    if (state.photo) { el.cursor.hidden = false; moveCursor(event); }
  });
  el.mask.addEventListener('pointerleave', () => { el.cursor.hidden = true; });

  function undo() {
    if (!state.undo.length || state.busy) return;
    maskCtx.putImageData(state.undo.pop(), 0, 0);
    maskEdited();
  }

  function clearMask() {
    if (!state.photo || state.busy) return;
    pushUndo();
    maskCtx.clearRect(0, 0, el.mask.width, el.mask.height);
    maskEdited();
  }

  // The mask as the server wants it: opaque PNG, white = hole, black = keep (no grey).
  function maskPNG() {
    const { width, height } = el.mask;
    const source = maskCtx.getImageData(0, 0, width, height).data;
    const binary = new ImageData(width, height);
    const out = binary.data;
    let holes = 0;
    for (let i = 0; i < source.length; i += 4) {
      const value = source[i + 3] >= 128 ? 255 : 0;
      holes += value ? 1 : 0;
      out[i] = out[i + 1] = out[i + 2] = value;
      out[i + 3] = 255;
    }
    const canvas = document.createElement('canvas');
    canvas.width = width;
    canvas.height = height;
    canvas.getContext('2d').putImageData(binary, 0, 0);
    return { url: canvas.toDataURL('image/png'), holes };
  }

  // --- Inpainting ------------------------------------------------------------------------

  async function showImage(img, url) {
    if (url) {
      img.src = url;
      img.parentElement.classList.remove('empty');
      try { await img.decode(); } catch (e) { /* shown when loaded */ }
    } else {
      img.removeAttribute('src');
      img.parentElement.classList.add('empty');
    }
  }

  async function inpaint(mode) {
    if (!state.photo || state.busy) return;
    if (mode === 'refine' && (!state.result || state.maskChangedSinceResult)) return;
    const start = performance.now();
    setBusy(true, mode === 'refine' ? 'Running again on the result…' : 'Inpainting…');
    showNotice([]);
    try {
      const mask = maskPNG();
      const image = mode === 'refine' ? state.result.composite : state.photo.url;
      const data = await request('/api/inpaint', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ image, mask: mask.url, mode }),
      });
      await Promise.all([
        showImage(el.masked, data.masked), showImage(el.output, data.output),
        showImage(el.composite, data.composite), showImage(el.telea, data.telea),
      ]);
      const seconds = (performance.now() - start) / 1000;
      state.result = data;
      state.passes = data.output ? (mode === 'refine' ? state.passes + 1 : 1) : 0;
      state.maskChangedSinceResult = false;
      state.lastTimings = Object.assign({ browser_s: seconds }, data.timings || {});
      el.passLabel.textContent = state.passes > 1 ? `(pass ${state.passes})` : '';
      el.download.href = data.composite;
      el.download.download = `${state.photo.name.replace(/\.[^.]*$/, '')}_inpainted.png`;
      showNotice(data.notes || [], 'info');
      const t = data.timings || {};
      setStatus(data.output ? `Done in ${seconds.toFixed(2)} s.` : 'Nothing to inpaint.');
      el.timing.textContent = data.output
        ? `Click to result ${seconds.toFixed(2)} s · server ${t.total_s.toFixed(2)} s (network ${t.network_s.toFixed(2)} s, Telea ${t.telea_s.toFixed(2)} s, PNG encoding ${t.encode_s.toFixed(2)} s) · ${(100 * data.hole_fraction).toFixed(1)}% of the photo masked · ${data.width}×${data.height}`
        : '';
    } catch (error) {
      setStatus('');
      showNotice(error.message, 'error');
    } finally {
      setBusy(false);
    }
  }

  function useResult() {
    if (!state.result || state.busy) return;
    const { composite, width, height } = state.result;
    setPhoto({ image: composite, width, height, notes: [] }, `${state.photo.name.replace(/\.[^.]*$/, '')}_inpainted`)
      .catch((error) => showNotice(error.message, 'error'));
  }

  // --- Wiring ----------------------------------------------------------------------------

  el.file.addEventListener('change', () => {
    uploadFile(el.file.files[0]);
    el.file.value = '';
  });
  el.stageBox.addEventListener('dragover', (event) => { event.preventDefault(); el.stageBox.classList.add('drop'); });
  el.stageBox.addEventListener('dragleave', () => el.stageBox.classList.remove('drop'));
  el.stageBox.addEventListener('drop', (event) => {
    event.preventDefault();
    el.stageBox.classList.remove('drop');
    if (event.dataTransfer.files.length) uploadFile(event.dataTransfer.files[0]);
  });
  el.brush.addEventListener('click', () => setTool('brush'));
  el.eraser.addEventListener('click', () => setTool('eraser'));
  el.size.addEventListener('input', () => setBrushSize(brushSize()));
  el.undo.addEventListener('click', undo);
  el.clear.addEventListener('click', clearMask);
  el.inpaint.addEventListener('click', () => inpaint('first'));
  el.again.addEventListener('click', () => inpaint('refine'));
  el.useResult.addEventListener('click', useResult);
  el.download.addEventListener('click', (event) => {
    if (el.download.classList.contains('disabled')) event.preventDefault();
  });
  window.addEventListener('resize', fitStage);
  window.addEventListener('keydown', (event) => {
    if (event.target instanceof HTMLInputElement && event.target.type !== 'range') return;
    const key = event.key.toLowerCase();
    if ((event.ctrlKey || event.metaKey) && key === 'z') { event.preventDefault(); undo(); }
    else if ((event.ctrlKey || event.metaKey) && key === 'enter') { event.preventDefault(); inpaint('first'); }
    else if (event.ctrlKey || event.metaKey || event.altKey) return;
    else if (key === 'b') setTool('brush');
    else if (key === 'e') setTool('eraser');
    else if (key === '[') setBrushSize(brushSize() - 4);
    else if (key === ']') setBrushSize(brushSize() + 4);
  });

  async function start() {
    setBrushSize(brushSize());
    clearResults();
    updateControls();
    try {
      state.info = await request('/api/info');
    } catch (error) {
      el.modelInfo.textContent = 'Model unavailable';
      showNotice(error.message, 'error');
      return;
    }
    const m = state.info.model;
    el.modelInfo.textContent = `${m.model} · ${m.image_size}×${m.image_size} · ${m.layers} levels · `
      + `checkpoint step ${m.step} · ${m.device}`;
    el.modelInfo.title = m.checkpoint;
    for (const example of state.info.examples) {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'example';
      button.title = example.title;
      const img = document.createElement('img');
      img.src = example.thumb;
      img.alt = example.title;
      const caption = document.createElement('span');
      caption.textContent = example.title;
      button.append(img, caption);
      button.addEventListener('click', () => loadExample(example));
      el.examples.append(button);
    }
    updateControls();
    document.body.dataset.ready = 'true';
  }

  // Read by the end-to-end test and handy in the console.
  window.demo = { state, maskPNG, inpaint };
  start();
})();
