// Keyboard shortcuts for rlhf-lab raters (an anywidget ES module).
// A focusable box: click it, then press keys. Each key the rater handles (model trait `shortcuts`) is sent to the
// kernel as a custom message {type: "key", key}; messages queue in order, so no press is lost.
// The box says whether keys are on. A mouse click on one of the same rater's buttons (A is better, skip, ...) keeps
// them on: focus comes back to the box after the click. A click anywhere else turns them off, and the box says so.

const ON = "⌨ keys on: ";
const OFF = "⌨ keys off: click here to use the keys · ";

function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "rlhf-keys";
  box.tabIndex = 0;
  box.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab 4: no notebook shortcuts while focused
  const classic = globalThis.Jupyter && globalThis.Jupyter.keyboard_manager; // Notebook 6 has its own shortcuts
  let keysOn = false; // the learner turned keys on (clicked the box) and has not clicked elsewhere since

  const show = () => {
    const hint = model.get("hint");
    box.textContent = (keysOn ? ON : OFF) + hint;
    box.classList.toggle("rlhf-keys-on", keysOn);
  };
  const onKey = (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (!model.get("shortcuts").includes(key)) return;
    event.preventDefault();
    event.stopPropagation();
    model.send({ type: "key", key });
  };
  const onFocus = () => { keysOn = true; show(); if (classic) classic.disable(); };
  const onBlur = () => { if (classic) classic.enable(); };
  // A click decides whether keys stay on: on one of this rater's buttons, yes (focus returns after the click);
  // anywhere else on the page, no (the learner went to do something else).
  const onDocumentClick = (event) => {
    if (!keysOn) return;
    const rater = box.closest(".rlhf-rater");
    const target = event.target instanceof Element ? event.target : null;
    const ownButton = rater && target && rater.contains(target) && target.closest("button");
    if (ownButton || (target && box.contains(target))) {
      setTimeout(() => box.focus({ preventScroll: true }), 0);
    } else {
      keysOn = false;
      show();
    }
  };
  const onHint = () => show();

  box.addEventListener("keydown", onKey);
  box.addEventListener("focus", onFocus);
  box.addEventListener("blur", onBlur);
  document.addEventListener("click", onDocumentClick, true);
  model.on("change:hint", onHint);
  show();
  el.appendChild(box);
  return () => {
    box.removeEventListener("keydown", onKey);
    box.removeEventListener("focus", onFocus);
    box.removeEventListener("blur", onBlur);
    document.removeEventListener("click", onDocumentClick, true);
    model.off("change:hint", onHint);
    onBlur();
  };
}

export default { render };
