// The review page: everything comes from data.js (window.FREELABEL_REVIEW); only the current page's thumbnails
// are in the document, so opening 100,000 images costs what opening 100 does, plus reading data.js.
"use strict";
(function () {
  const data = window.FREELABEL_REVIEW;
  const timing = (window.REVIEW_TIMING = {});
  const count = data.names.length;
  const $ = (id) => document.getElementById(id);
  const state = { order: [], page: 0, viewing: -1, mode: "overlay" };

  function element(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    (children || []).forEach((child) => node.append(child));
    return node;
  }

  function swatch(index) {
    const node = element("span", { className: "swatch" });
    node.style.background = data.colours[index];
    return node;
  }

  function classLabel(index, extra) {
    return element("span", {}, [swatch(index), data.classes[index] + (extra || "")]);
  }

  // a label's score in an image: the filtered label's, else the image's lowest; null when it has none
  function score(i, label) {
    const scores = data.scores[i];
    if (!scores) return null;
    if (label !== null) {
      const at = data.labels[i].indexOf(label);
      return at < 0 ? null : scores[at];
    }
    return scores.length ? Math.min(...scores) : null;
  }

  function shows(i, label) {
    return data.labels[i].includes(label) || data.areas[i].some((area) => area[0] === label);
  }

  function reorder() {
    const how = $("sort").value;
    const label = $("filter").value === "" ? null : Number($("filter").value);
    let order = [];
    for (let i = 0; i < count; i++) if (label === null || shows(i, label)) order.push(i);
    const byName = (a, b) => (data.names[a] < data.names[b] ? -1 : data.names[a] > data.names[b] ? 1 : 0);
    if (how === "name") order.sort(byName);
    else if (how === "ignored") order.sort((a, b) => (data.ignored[b] ?? -1) - (data.ignored[a] ?? -1) || byName(a, b));
    else {
      const keys = new Map(order.map((i) => [i, score(i, label)]));
      order.sort((a, b) => {
        const x = keys.get(a), y = keys.get(b);
        if (x === null || y === null) return (x === null) - (y === null) || byName(a, b);
        return x - y || byName(a, b);
      });
    }
    state.order = order;
    state.page = 0;
    renderGrid();
  }

  function pages() {
    return Math.max(1, Math.ceil(state.order.length / data.page_size));
  }

  function renderGrid() {
    const started = performance.now();
    const grid = $("grid");
    const first = state.page * data.page_size;
    const shown = state.order.slice(first, first + data.page_size);
    let waiting = shown.length;
    const loaded = () => {
      if (--waiting === 0 && timing.images === undefined) timing.images = performance.now();
    };
    grid.replaceChildren(...shown.map((i, k) => {
      const img = element("img", { src: "thumbs/" + i + ".jpg", alt: data.names[i], onload: loaded, onerror: loaded });
      const ignored = data.ignored[i] === null || data.ignored[i] === undefined ? "" :
        (100 * data.ignored[i]).toFixed(1) + "% ignored";
      const labels = element("div", { className: "labels" }, data.labels[i].map((label, at) =>
        classLabel(label, data.scores[i] ? " " + data.scores[i][at].toFixed(2) : "")));
      const cell = element("div", { className: "cell", tabIndex: 0, title: data.names[i] }, [
        img, element("div", { className: "name", textContent: data.names[i] }),
        element("div", { className: "ignored", textContent: ignored }), labels]);
      cell.dataset.index = i;
      cell.dataset.position = first + k;
      cell.addEventListener("click", () => openView(first + k));
      return cell;
    }));
    if (!shown.length) timing.images = timing.images ?? performance.now();
    $("page-info").textContent = "page " + (state.page + 1) + " / " + pages() + " \u00b7 " + state.order.length +
      " of " + count + " images";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page + 1 >= pages();
    if (timing.grid === undefined) {
      timing.build = performance.now() - started;
      requestAnimationFrame(() => (timing.grid = performance.now()));
    }
  }

  function openView(position) {
    if (position < 0 || position >= state.order.length) return;
    const i = state.order[position];
    state.viewing = position;
    if (Math.floor(position / data.page_size) !== state.page) {
      state.page = Math.floor(position / data.page_size);
      renderGrid();
    }
    const problem = data.problems.find((entry) => entry[0] === i);
    $("view-image").src = data.images[i] ?? data.masks[i];  // an unreadable image: its mask stands in
    $("view-mask").src = data.masks[i];
    $("view-title").textContent = data.names[i] + " (" + (position + 1) + " / " + state.order.length + ")";
    const info = [];
    info.push(element("div", { className: "labels" }, [
      element("b", { textContent: "labels:" }),
      ...data.labels[i].map((label, at) =>
        classLabel(label, data.scores[i] ? " score " + data.scores[i][at].toFixed(3) : ""))]));
    info.push(element("div", { className: "labels" }, [
      element("b", { textContent: "areas:" }),
      ...data.areas[i].map((area) => classLabel(area[0], " " + (100 * area[1]).toFixed(1) + "%"))]));
    const facts = [];
    if (data.ignored[i] !== null && data.ignored[i] !== undefined) {
      facts.push((100 * data.ignored[i]).toFixed(2) + "% ignored");
    }
    if (data.keys[i] !== null && data.keys[i] !== undefined) {
      facts.push(data.keys[i] ? "key frame" : "propagated frame");
    }
    if (problem) facts.push("image not shown: " + problem[1]);
    info.push(element("div", { textContent: facts.join(" \u00b7 ") }));
    $("view-info").replaceChildren(...info);
    setMode(state.mode);
    $("viewer").hidden = false;
  }

  // the full view fills the stage whatever the image's size (small images are scaled up, pixels kept sharp)
  function fitImage() {
    const img = $("view-image"), stage = document.querySelector("#viewer .stage");
    if (!img.naturalWidth) return;
    const scale = Math.min(stage.clientWidth / img.naturalWidth, stage.clientHeight / img.naturalHeight) * 0.98;
    img.style.width = Math.floor(img.naturalWidth * scale) + "px";
    img.style.height = Math.floor(img.naturalHeight * scale) + "px";
  }

  function setMode(mode) {
    state.mode = mode;
    document.querySelector("#viewer .layers").className = "layers " + mode;
    for (const name of ["image", "mask", "overlay"]) $("mode-" + name).classList.toggle("active", name === mode);
  }

  function closeView() {
    $("viewer").hidden = true;
    state.viewing = -1;
  }

  function turnPage(step) {
    const page = Math.min(pages() - 1, Math.max(0, state.page + step));
    if (page !== state.page) {
      state.page = page;
      renderGrid();
    }
  }

  function setUp() {
    $("source").textContent = count + " images from " + data.folder;
    $("legend").replaceChildren(...data.classes.map((_, index) => classLabel(index)));
    const filter = $("filter");
    data.classes.forEach((name, index) => {
      if (data.summary[index].images) filter.append(element("option", { value: String(index), textContent: name }));
    });
    $("summary").tBodies[0].replaceChildren(...data.summary.filter((row) => row.images).map((row) => {
      const tr = element("tr", { title: "show only " + data.classes[row.class] }, [
        element("td", {}, [classLabel(row.class)]), element("td", { textContent: String(row.images) }),
        element("td", { textContent: (100 * row.mean_area).toFixed(1) + "%" })]);
      tr.addEventListener("click", () => { filter.value = String(row.class); reorder(); });
      return tr;
    }));
    $("sort").addEventListener("change", reorder);
    filter.addEventListener("change", reorder);
    $("prev").addEventListener("click", () => turnPage(-1));
    $("next").addEventListener("click", () => turnPage(1));
    $("view-prev").addEventListener("click", () => openView(state.viewing - 1));
    $("view-next").addEventListener("click", () => openView(state.viewing + 1));
    $("view-close").addEventListener("click", closeView);
    $("view-image").addEventListener("load", fitImage);
    window.addEventListener("resize", fitImage);
    for (const mode of ["image", "mask", "overlay"]) $("mode-" + mode).addEventListener("click", () => setMode(mode));
    document.addEventListener("keydown", (event) => {
      if (event.target.tagName === "SELECT") return;
      const viewing = !$("viewer").hidden;
      if (event.key === "ArrowRight") viewing ? openView(state.viewing + 1) : turnPage(1);
      else if (event.key === "ArrowLeft") viewing ? openView(state.viewing - 1) : turnPage(-1);
      else if (event.key === "Escape" && viewing) closeView();
      else if (viewing && { i: 1, m: 1, o: 1 }[event.key]) setMode({ i: "image", m: "mask", o: "overlay" }[event.key]);
      else if (!viewing && event.key === "Enter" && event.target.dataset && event.target.dataset.position)
        openView(Number(event.target.dataset.position));
      else return;
      event.preventDefault();
    });
    reorder();
  }

  setUp();
})();
