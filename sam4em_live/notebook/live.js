// The browser half of LiveView (anywidget ESM): the service's preview with positions and trails; a click
// prompts the selected particle over the kernel's control client (full-frame pixels, x = column, y = row).
// Discovery proposals (propose mode) are dashed cyan outlines with "P<id> <score>σ" (tracked particles are
// filled dots with "#<id>"); a click on one selects it (it never prompts there), and the list below accepts or
// rejects the selected one, any one, or all.

const PALETTE = [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66],
                 [0, 114, 178], [213, 94, 0], [204, 121, 167], [255, 255, 255]];
const PROPOSAL = "rgb(0,230,230)", PROPOSAL_SELECTED = "rgb(255,255,0)";
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

  // discovery proposals: a list with accept / reject per proposal, for the selected one, and for all
  let selectedProposal = null;
  const decide = (kind, proposals = []) => { model.send({ kind, proposals }); if (proposals.includes(selectedProposal)) selectedProposal = null; };
  const button = (label, cls, fn) => { const b = h("button", { type: "button", class: `s4-button ${cls}` }, label); b.addEventListener("click", fn); return b; };
  const proposalList = h("div", { class: "s4-proposal-list" });
  const proposalCount = h("span", { class: "s4-proposal-count" });
  const acceptSelected = button("accept selected", "s4-accept-selected", () => { if (selectedProposal !== null) decide("accept", [selectedProposal]); });
  const rejectSelected = button("reject selected", "s4-reject-selected", () => { if (selectedProposal !== null) decide("reject", [selectedProposal]); });
  const acceptAll = button("accept all", "s4-accept-all", () => decide("accept_all"));
  const rejectAll = button("reject all", "s4-reject-all", () => decide("reject_all"));
  const proposalBar = h("div", { class: "s4-row s4-proposals" }, proposalCount, acceptSelected, rejectSelected, acceptAll, rejectAll);
  el.append(proposalBar, proposalList);
  const proposalAt = (x, y) => {
    let best = null, bestD = Infinity;
    for (const p of model.get("proposals")) {
      const [x0, y0, x1, y1] = p.box || [p.x, p.y, p.x, p.y];
      const d = Math.hypot(x - p.x, y - p.y);
      const inside = (x >= x0 - 2 && x <= x1 + 2 && y >= y0 - 2 && y <= y1 + 2) || d <= Math.max(p.diameter_px / 2, 4);
      if (inside && d < bestD) { best = p.proposal; bestD = d; }
    }
    return best;
  };
  const drawProposalList = () => {
    const proposals = model.get("proposals"), can = model.get("can_decide");
    if (!proposals.some((p) => p.proposal === selectedProposal)) selectedProposal = null;
    proposalCount.textContent = proposals.length ? `${proposals.length} proposal${proposals.length === 1 ? "" : "s"}` : "no proposals";
    el.dataset.proposals = proposals.map((p) => p.proposal).join(",");  // for tests
    el.dataset.selectedProposal = selectedProposal === null ? "" : String(selectedProposal);
    for (const b of [acceptSelected, rejectSelected]) b.disabled = !can || selectedProposal === null;
    for (const b of [acceptAll, rejectAll]) b.disabled = !can || proposals.length === 0;
    proposalList.replaceChildren(...proposals.map((p) => {
      const row = h("div", { class: "s4-proposal" + (p.proposal === selectedProposal ? " s4-selected" : "") },
        `P${p.proposal} ${p.score.toFixed(1)}σ (${p.x.toFixed(0)}, ${p.y.toFixed(0)}) Ø ${p.diameter_px.toFixed(0)} px `,
        button("accept", "s4-accept", () => decide("accept", [p.proposal])), button("reject", "s4-reject", () => decide("reject", [p.proposal])));
      row.dataset.proposal = String(p.proposal);
      row.querySelectorAll("button").forEach((b) => { b.disabled = !can; });
      return row;
    }));
  };

  let token = 0;
  const drawImage = async () => {
    const view = model.get("image"); if (!view || view.byteLength === 0) return;
    const mine = ++token;
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(view.buffer, view.byteOffset, view.byteLength)], { type: "image/png" }));
    if (mine !== token) return;
    frameCanvas.width = bitmap.width; frameCanvas.height = bitmap.height;
    frameCanvas.getContext("2d").drawImage(bitmap, 0, 0);
    el.dataset.drawn = String(model.get("frame"));  // a preview is on the canvas (decoding is async), for tests
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
    for (const p of model.get("proposals")) {
      const ring = p.outline.length >= 3 ? p.outline : (p.box ? [[p.box[0], p.box[1]], [p.box[2], p.box[1]], [p.box[2], p.box[3]], [p.box[0], p.box[3]]] : []);
      const chosen = p.proposal === selectedProposal;
      g.strokeStyle = chosen ? PROPOSAL_SELECTED : PROPOSAL; g.lineWidth = chosen ? 2.5 : 1.5; g.setLineDash(chosen ? [] : [4, 3]);
      g.beginPath(); ring.forEach(([x, y], k) => (k ? g.lineTo : g.moveTo).call(g, (x + 0.5) * s, (y + 0.5) * s)); g.closePath(); g.stroke();
      g.setLineDash([]); g.fillStyle = chosen ? PROPOSAL_SELECTED : PROPOSAL;
      g.fillText(`P${p.proposal} ${p.score.toFixed(1)}σ`, (p.x + 0.5 + p.diameter_px / 2) * s + 3, (p.y + 0.5) * s + 10);
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
    const x = (e.clientX - r.left) / r.width * model.get("cols") - 0.5, y = (e.clientY - r.top) / r.height * model.get("rows") - 0.5;
    const hit = e.shiftKey ? null : proposalAt(x, y);
    if (hit !== null) {  // a click on a proposal selects it (again: deselects) for accept / reject
      selectedProposal = hit === selectedProposal ? null : hit;
      drawProposalList(); drawMarks();
      return;
    }
    model.send({ kind: "point", x, y, negative: e.shiftKey || model.get("negative") });
  });
  const handlers = [["change:image", drawImage], ["change:positions change:trails change:rows change:cols change:display_px change:proposals", drawMarks],
                    ["change:proposals change:can_decide", drawProposalList],
                    ["change:frame change:received change:status change:message", drawInfo],
                    ["change:particle change:negative", () => { particleInput.value = model.get("particle"); negativeBox.checked = model.get("negative"); }]];
  for (const [events, fn] of handlers) model.on(events, fn);
  drawImage(); drawMarks(); drawInfo(); drawProposalList();
  return () => { for (const [events, fn] of handlers) model.off(events, fn); };
}

export default { render };
