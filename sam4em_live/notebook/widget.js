// The browser half of TrackerWidget (anywidget ESM). It draws what the kernel sends (the frame with its
// contrast applied, the masks as an RGBA PNG, trajectories, figures) and sends clicks, drags and buttons
// back as messages in frame pixels (x = column, y = row, origin at the centre of the top-left pixel).
// Nothing here computes a mask or a statistic.

const PALETTE = [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
                 [0, 114, 178], [213, 94, 0], [204, 121, 167], [255, 255, 255]];
const colour = (id, a = 1) => { const [r, g, b] = PALETTE[(id - 1) % PALETTE.length]; return `rgba(${r},${g},${b},${a})`; };
const DRAG_MIN_CSS_PX = 5;  // a press that moves less than this is a click, not a box

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k in node) node[k] = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

async function pngBitmap(view) {
  if (!view || view.byteLength === 0) return null;
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  return createImageBitmap(new Blob([bytes], { type: "image/png" }));
}

function slider(label, min, max, step, value, onInput) {
  const input = h("input", { type: "range", min, max, step, value });
  const shown = h("span", { class: "s4-value" }, String(value));
  input.addEventListener("input", () => { shown.textContent = input.value; });
  input.addEventListener("change", () => onInput(Number(input.value)));
  return { row: h("label", { class: "s4-slider" }, label, input, shown), input, shown };
}

function render({ model, el }) {
  el.classList.add("s4-tracker");
  const stage = h("div", { class: "s4-stage" });
  const frameCanvas = h("canvas", { class: "s4-frame" });
  const maskCanvas = h("canvas", { class: "s4-masks" });
  const markCanvas = h("canvas", { class: "s4-marks" });
  stage.append(frameCanvas, maskCanvas, markCanvas);

  // -- controls
  const particleInput = h("input", { type: "number", min: 1, step: 1, value: model.get("particle"), class: "s4-particle" });
  particleInput.addEventListener("change", () => { model.set("particle", Math.max(1, parseInt(particleInput.value, 10) || 1)); model.save_changes(); });
  const negativeBox = h("input", { type: "checkbox", class: "s4-negative" });
  negativeBox.addEventListener("change", () => { model.set("negative", negativeBox.checked); model.save_changes(); });
  let nextId = 1;
  const sentAt = new Map();
  const send = (msg) => { const id = nextId++; sentAt.set(id, performance.now()); model.send({ ...msg, id }); return id; };
  const button = (text, cls, onClick) => { const b = h("button", { class: `s4-button ${cls}`, type: "button" }, text); b.addEventListener("click", onClick); return b; };
  const tools = h("div", { class: "s4-row" },
    h("label", {}, "particle ", particleInput),
    button("new", "s4-new", () => send({ kind: "new_particle" })),
    h("label", { title: "or shift-click" }, negativeBox, " negative point"),
    button("clear prompt", "s4-clear", () => send({ kind: "clear" })),
    button("remove from this frame", "s4-remove", () => send({ kind: "remove" })));

  const frameSlider = slider("frame", 0, Math.max(0, model.get("n_frames") - 1), 1, model.get("frame"), (v) => { model.set("frame", v); model.save_changes(); });
  const low = slider("low %", 0, 50, 0.5, model.get("low_pct"), (v) => { model.set("low_pct", v); model.save_changes(); });
  const high = slider("high %", 50, 100, 0.1, model.get("high_pct"), (v) => { model.set("high_pct", v); model.save_changes(); });
  const gamma = slider("gamma", 0.2, 3, 0.05, model.get("gamma"), (v) => { model.set("gamma", v); model.save_changes(); });
  const showTracked = h("input", { type: "checkbox", checked: model.get("show_tracked") });
  showTracked.addEventListener("change", () => { model.set("show_tracked", showTracked.checked); model.save_changes(); });
  const view = h("div", { class: "s4-row" }, frameSlider.row, low.row, high.row, gamma.row,
                 h("label", {}, showTracked, " tracked masks"));

  const trackButton = button("Track", "s4-track", () => send({ kind: "track" }));
  const bar = h("progress", { class: "s4-progress", max: 1, value: 0 });
  const message = h("span", { class: "s4-message" });
  const ticks = h("span", { class: "s4-ticks" });
  const figures = h("div", { class: "s4-figures" });
  const particleList = h("div", { class: "s4-particles" });
  el.append(tools, view, stage, h("div", { class: "s4-row" }, trackButton, bar, message),
            h("div", { class: "s4-row" }, "statistics: ", ticks), particleList, figures);

  // -- drawing
  const size = () => {
    const rows = model.get("rows"), cols = model.get("cols");
    for (const c of [frameCanvas, maskCanvas, markCanvas]) { if (c.width !== cols) c.width = cols; if (c.height !== rows) c.height = rows; }
    stage.style.width = `${model.get("display_px")}px`;
    stage.classList.toggle("s4-magnified", model.get("display_px") >= cols);
    stage.style.height = `${model.get("display_px") * rows / cols}px`;
  };
  let drag = null;
  const drawMarks = () => {
    const g = markCanvas.getContext("2d");
    g.clearRect(0, 0, markCanvas.width, markCanvas.height);
    const scale = model.get("cols") / model.get("display_px");  // frame px per CSS px
    const frame = model.get("frame");
    g.lineWidth = 1.5 * scale;
    for (const [id, t] of Object.entries(model.get("trajectories"))) {
      g.strokeStyle = colour(Number(id), 0.9);
      g.beginPath();
      let started = false;
      for (let k = 0; k < t.frame.length && t.frame[k] <= frame; k++) {
        if (started) g.lineTo(t.x[k] + 0.5, t.y[k] + 0.5); else { g.moveTo(t.x[k] + 0.5, t.y[k] + 0.5); started = true; }
      }
      g.stroke();
    }
    for (const p of model.get("prompts")) {
      if (p.frame !== frame) continue;
      g.strokeStyle = colour(p.particle);
      if (p.box) { const [x0, y0, x1, y1] = p.box; g.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0, y1 - y0); }
      p.points.forEach(([x, y], k) => {
        const r = 6 * scale; g.strokeStyle = p.labels[k] ? "rgb(60,255,60)" : "rgb(255,60,60)";
        g.beginPath();
        if (p.labels[k]) { g.moveTo(x + 0.5 - r, y + 0.5); g.lineTo(x + 0.5 + r, y + 0.5); g.moveTo(x + 0.5, y + 0.5 - r); g.lineTo(x + 0.5, y + 0.5 + r); }
        else { g.moveTo(x + 0.5 - r, y + 0.5 - r); g.lineTo(x + 0.5 + r, y + 0.5 + r); g.moveTo(x + 0.5 + r, y + 0.5 - r); g.lineTo(x + 0.5 - r, y + 0.5 + r); }
        g.stroke();
      });
    }
    if (drag && drag.box) {
      g.setLineDash([4 * scale, 3 * scale]); g.strokeStyle = colour(model.get("particle"));
      const [x0, y0, x1, y1] = drag.box; g.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0, y1 - y0); g.setLineDash([]);
    }
  };
  let imageToken = 0, maskToken = 0;
  const drawImage = async () => {
    const mine = ++imageToken; const bitmap = await pngBitmap(model.get("image"));
    if (mine !== imageToken || !bitmap) return;
    size(); frameCanvas.getContext("2d").drawImage(bitmap, 0, 0);
  };
  const drawMasks = async () => {
    const mine = ++maskToken; const answered = model.get("answered");
    const bitmap = await pngBitmap(model.get("masks"));
    if (mine !== maskToken) return;
    size();
    const g = maskCanvas.getContext("2d", { willReadFrequently: true });
    g.clearRect(0, 0, maskCanvas.width, maskCanvas.height);
    const [x0, y0] = model.get("masks_origin");
    let n = 0;
    if (bitmap) {
      g.drawImage(bitmap, x0, y0);
      // What the browser test reads back: mask pixels on the canvas (only the crop can hold any).
      const data = g.getImageData(x0, y0, bitmap.width, bitmap.height).data;
      for (let k = 3; k < data.length; k += 4) if (data[k] > 0) n++;
    }
    el.dataset.maskPixels = String(n);
    if (sentAt.has(answered)) {
      el.dataset.lastLatencyMs = (performance.now() - sentAt.get(answered)).toFixed(1);
      el.dataset.answered = String(answered);
      sentAt.delete(answered);
    }
  };
  const drawStatus = () => {
    const phase = model.get("phase");
    el.dataset.phase = phase;
    bar.value = model.get("progress");
    trackButton.disabled = phase === "tracking";
    message.textContent = model.get("message") + (model.get("seed_ms") ? `  (last mask ${model.get("seed_ms")} ms in the kernel)` : "");
  };
  const drawTicks = () => {
    ticks.replaceChildren();
    const ticked = new Set(model.get("ticked"));
    for (const [name, label] of Object.entries(model.get("statistics"))) {
      const box = h("input", { type: "checkbox", checked: ticked.has(name), value: name, class: `s4-tick-${name}` });
      box.addEventListener("change", () => {
        const now = new Set(model.get("ticked")); if (box.checked) now.add(name); else now.delete(name);
        model.set("ticked", [...now]); model.save_changes();
      });
      ticks.append(h("label", {}, box, ` ${label} `));
    }
  };
  const drawFigures = () => {
    figures.replaceChildren(...Object.entries(model.get("figures")).map(([name, b64]) =>
      h("img", { class: `s4-figure s4-figure-${name}`, src: `data:image/png;base64,${b64}`, alt: name })));
  };
  const drawParticles = () => {
    particleList.replaceChildren(...model.get("particles").map((p) => {
      const chip = h("span", { class: "s4-chip" }, `#${p.particle}: prompts on ${p.frames.join(", ") || "-"}` +
                     (p.removed_from !== null ? `, removed from ${p.removed_from}` : ""));
      chip.style.borderColor = colour(p.particle);
      chip.addEventListener("click", () => { model.set("particle", p.particle); model.save_changes(); });
      return chip;
    }));
  };

  // -- pointer: click = point, shift-click (or the toggle) = negative point, drag = box
  const toFrame = (e) => {
    const r = markCanvas.getBoundingClientRect();
    return [(e.clientX - r.left) / r.width * model.get("cols") - 0.5, (e.clientY - r.top) / r.height * model.get("rows") - 0.5];
  };
  markCanvas.addEventListener("pointerdown", (e) => { drag = { start: toFrame(e), cx: e.clientX, cy: e.clientY, box: null }; markCanvas.setPointerCapture(e.pointerId); });
  markCanvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (Math.hypot(e.clientX - drag.cx, e.clientY - drag.cy) >= DRAG_MIN_CSS_PX) { const [x, y] = toFrame(e); drag.box = [...drag.start, x, y].map((v) => v); drawMarks(); }
  });
  markCanvas.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const d = drag; drag = null;
    if (d.box) { const [x0, y0, x1, y1] = d.box; send({ kind: "box", x0: Math.min(x0, x1), y0: Math.min(y0, y1), x1: Math.max(x0, x1), y1: Math.max(y0, y1) }); }
    else { const [x, y] = d.start; send({ kind: "point", x, y, negative: e.shiftKey || model.get("negative") }); }
    drawMarks();
  });

  const sync = () => {
    particleInput.value = model.get("particle"); negativeBox.checked = model.get("negative");
    frameSlider.input.max = Math.max(0, model.get("n_frames") - 1);
    for (const [s, key] of [[frameSlider, "frame"], [low, "low_pct"], [high, "high_pct"], [gamma, "gamma"]]) { s.input.value = model.get(key); s.shown.textContent = String(model.get(key)); }
    showTracked.checked = model.get("show_tracked");
  };
  const handlers = [
    ["change:image", drawImage],
    // an answer whose masks are unchanged (a negative point on background) sends only "answered"
    ["change:masks change:masks_origin change:answered", drawMasks],
    ["change:prompts change:trajectories change:frame", drawMarks],
    ["change:phase change:progress change:message change:seed_ms", drawStatus],
    ["change:statistics change:ticked", drawTicks], ["change:figures", drawFigures], ["change:particles", drawParticles],
    ["change:particle change:negative change:frame change:n_frames change:low_pct change:high_pct change:gamma change:show_tracked", sync],
    ["change:display_px change:rows change:cols", size],
  ];
  for (const [events, fn] of handlers) model.on(events, fn);
  size(); drawImage(); drawMasks(); drawMarks(); drawStatus(); drawTicks(); drawFigures(); drawParticles(); sync();
  el.dataset.ready = "1";
  return () => { for (const [events, fn] of handlers) model.off(events, fn); };
}

export default { render };
