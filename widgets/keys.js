// Keyboard shortcuts for rlhf-lab raters (an anywidget ES module).
// A focusable box: click it, then press keys. Each key the rater handles (model trait `shortcuts`) is sent to the
// kernel as a custom message {type: "key", key}; messages queue in order, so no press is lost.

function render({ model, el }) {
  const box = document.createElement("div");
  box.className = "rlhf-keys";
  box.tabIndex = 0;
  box.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab 4: no notebook shortcuts while focused
  box.textContent = model.get("hint");
  const classic = globalThis.Jupyter && globalThis.Jupyter.keyboard_manager; // Notebook 6 has its own shortcuts

  const onKey = (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (!model.get("shortcuts").includes(key)) return;
    event.preventDefault();
    event.stopPropagation();
    model.send({ type: "key", key });
  };
  const onFocus = () => classic && classic.disable();
  const onBlur = () => classic && classic.enable();
  const onHint = () => { box.textContent = model.get("hint"); };

  box.addEventListener("keydown", onKey);
  box.addEventListener("focus", onFocus);
  box.addEventListener("blur", onBlur);
  model.on("change:hint", onHint);
  el.appendChild(box);
  return () => {
    box.removeEventListener("keydown", onKey);
    box.removeEventListener("focus", onFocus);
    box.removeEventListener("blur", onBlur);
    model.off("change:hint", onHint);
    onBlur();
  };
}

export default { render };
