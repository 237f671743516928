// The browser half of LiveView (anywidget ESM): the service's preview with positions and trails; a click
// prompts the selected particle over the kernel's control client (full-frame pixels, x = column, y = row).

const PALETTE = [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
                 [0, 114, 178], [213, 94, 0], [204, 121, 167], [255, 255, 255]];
const colour = (id) => { const [r, g, b] = PALETTE[(id - 1) % PALETTE.length]; return `rgb(${r},${g},${b})`; };

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") node.className = v; else if (k in node) node[k] = v; else node.setAttribute(k, v); }
  for (const c of children) node.append(c);
  return node;
}

function render({ model, el }) {
  el.classList.add("s4-tracker", "s4-live");
  const stage = h("div", { class: "s4-stage" });
  const frameCanvas = h("canvas", { class: "s4-frame" });
  const markCanvas = h("canvas", { class: "s4-marks" });
  stage.append(frameCanvas, markCanvas);
  const particleInput = h("input", { type: "number", min: 1, step: 1, value: model.get("particle"), class: "s4-particle" });
  particleInput.addEventListener("change", () => { model.set("particle", Math.max(1, parseInt(particleInput.value, 10) || 1)); model.save_changes(); });
  const negativeBox = h("input", { type: "checkbox" });
  negativeBox.addEventListener("change", () => { model.set("negative", negativeBox.checked); model.save_changes(); });
  const remove = h("button", { type: "button", class: "s4-button s4-remove" }, "remove");
  remove.addEventListener("click", () => model.send({ kind: "remove" }));
  const info = h("span", { class: "s4-message" });
  el.append(h("div", { class: "s4-row" }, h("label", {}, "particle ", particleInput), h("label", {}, negativeBox, " negative"), remove, info), stage);

  let token = 0;
  const drawImage = async () => {
    const view = model.get("image"); if (!view || view.byteLength === 0) return;
    const mine = ++token;
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(view.buffer, view.byteOffset, view.byteLength)], { type: "image/png" }));
    if (mine !== token) return;
    frameCanvas.width = bitmap.width; frameCanvas.height = bitmap.height;
    frameCanvas.getContext("2d").drawImage(bitmap, 0, 0);
    drawMarks();
  };
  const drawMarks = () => {
    const rows = model.get("rows"), cols = model.get("cols"); if (!rows || !cols) return;
    el.dataset.rows = String(rows); el.dataset.cols = String(cols);  // the full frame's shape, for tests
    const px = model.get("display_px");
    stage.style.width = `${px}px`; stage.style.height = `${px * rows / cols}px`;
    markCanvas.width = px; markCanvas.height = Math.round(px * rows / cols);
    const s = px / cols, g = markCanvas.getContext("2d");
    g.clearRect(0, 0, markCanvas.width, markCanvas.height);
    for (const [id, trail] of Object.entries(model.get("trails"))) {
      g.strokeStyle = colour(Number(id)); g.lineWidth = 1.5; g.beginPath();
      trail.forEach(([x, y], k) => (k ? g.lineTo : g.moveTo).call(g, (x + 0.5) * s, (y + 0.5) * s)); g.stroke();
    }
    for (const [id, [x, y]] of Object.entries(model.get("positions"))) {
      g.fillStyle = colour(Number(id)); g.beginPath(); g.arc((x + 0.5) * s, (y + 0.5) * s, 4, 0, 2 * Math.PI); g.fill();
      g.fillText(`#${id}`, (x + 0.5) * s + 6, (y + 0.5) * s - 6);
    }
  };
  const drawInfo = () => {
    const st = model.get("status");
    info.textContent = `frame ${model.get("frame")} · ${model.get("received")} results` + (st.state ? ` · ${st.state}` : "") + (model.get("message") ? ` · ${model.get("message")}` : "");
    el.dataset.frame = String(model.get("frame"));
  };
  markCanvas.addEventListener("click", (e) => {
    const r = markCanvas.getBoundingClientRect();
    model.send({ kind: "point", x: (e.clientX - r.left) / r.width * model.get("cols") - 0.5, y: (e.clientY - r.top) / r.height * model.get("rows") - 0.5, negative: e.shiftKey || model.get("negative") });
  });
  const handlers = [["change:image", drawImage], ["change:positions change:trails change:rows change:cols change:display_px", drawMarks],
                    ["change:frame change:received change:status change:message", drawInfo],
                    ["change:particle change:negative", () => { particleInput.value = model.get("particle"); negativeBox.checked = model.get("negative"); }]];
  for (const [events, fn] of handlers) model.on(events, fn);
  drawImage(); drawMarks(); drawInfo();
  return () => { for (const [events, fn] of handlers) model.off(events, fn); };
}

export default { render };
