// The review page: group review with a synced 100 % loupe, the gallery, search; keyboard first.
// Talks only to its own server (the token travels in an HttpOnly cookie the server set).
"use strict";

const $ = (selector) => document.querySelector(selector);
const TILE = 512;
const COMPARED = 4;  // frames side by side at most
const MAX_ZOOM = 8;
const GRID_PAGE = 240;  // gallery cells added at a time

const state = {
  groups: [], groupIndex: -1, group: null, selected: 0,
  compare: true, loupe: false, zoom: 1, cx: 0.5, cy: 0.5,
  undo: [],  // [{decision, photo}] of this session, newest last
  view: "review", gallery: null, passing: [], shown: 0, cell: -1,
  results: [], resultIndex: -1, pointer: null,
};

// --------------------------------------------------------------------------- talking to the server

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options,
    headers: options.body ? { "Content-Type": "application/json" } : {} });
  let data = null;
  try { data = await response.json(); } catch (error) { data = { error: `${response.status} ${response.statusText}` }; }
  return { status: response.status, ok: response.ok, data };
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

let noticeTimer = null;
function notice(text, warning = false) {
  const box = $("#notice");
  box.textContent = text;
  box.classList.toggle("warning", warning);
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, warning ? 8000 : 2500);
}

// --------------------------------------------------------------------------- groups

async function start() {
  const [session, groups] = await Promise.all([api("/api/session"), api("/api/groups")]);
  if (session.ok) $("#where").textContent = session.data.library.join(", ");
  state.groups = groups.ok ? groups.data.groups : [];
  if (state.groups.length) {
    showLoadedGroup(0, groups.data.first);
  } else {
    $("#group-title").textContent = groups.ok && groups.data.culled ? "No groups in this library"
      : "No groups yet: `aes-index cull` groups bursts and near-duplicates";
    document.body.dataset.ready = "no-groups";
  }
}

async function showGroup(position, selectId = null) {
  if (position < 0 || position >= state.groups.length) return;
  const { ok, data } = await api(`/api/groups/${state.groups[position].id}`);
  if (!ok) { notice(data.error, true); return; }
  showLoadedGroup(position, data, selectId);
}

function showLoadedGroup(position, data, selectId = null) {
  state.groupIndex = position;
  state.group = data;
  const at = data.members.findIndex((member) => member.id === selectId);
  state.selected = Math.max(0, at);
  showView("review");
  render();
}

function showPhoto(photo) {
  // A photo in no group: reviewed alone, with the same keys.
  state.group = { id: null, kind: "photo", reason: "", chosenBy: "", members: [photo] };
  state.selected = 0;
  showView("review");
  render();
}

async function openPhoto(id) {
  const { ok, data } = await api(`/api/photos/${id}`);
  if (!ok) { notice(data.error, true); return; }
  const position = state.groups.findIndex((group) => group.id === data.group);
  if (data.group !== null && position >= 0) await showGroup(position, id);
  else showPhoto(data);
}

function member() { return state.group ? state.group.members[state.selected] : null; }

function shownMembers() {
  const members = state.group.members;
  if (!state.compare) return [state.selected];
  const first = Math.max(0, Math.min(state.selected - COMPARED + 2, members.length - COMPARED));
  return members.slice(first, first + COMPARED).map((_, i) => first + i);
}

// --------------------------------------------------------------------------- rendering a group

function render() {
  const group = state.group;
  if (!group) return;
  const title = group.id === null ? "One photo" :
    `${group.kind} ${state.groupIndex + 1} of ${state.groups.length}: ${group.members.length} photos`;
  $("#group-title").textContent = title;
  $("#group-reason").textContent = group.reason ? `keeper: ${group.reason}${group.chosenBy === "you" ? " (your pick)" : ""}` : "";
  const frames = $("#frames");
  frames.replaceChildren();
  const shown = shownMembers();
  for (const index of shown) frames.append(frameFor(group.members[index], index));
  frames.style.gridTemplateColumns = `repeat(${columnsFor(shown.map((i) => group.members[i]), frames)}, minmax(0, 1fr))`;
  updateMode();
  document.body.dataset.group = String(group.id);
  requestAnimationFrame(paintAll);
}

const FACTS_HEIGHT = 80;  // px under each frame for its facts

function columnsFor(photos, frames) {
  // Side by side or in rows: the layout that shows the pictures largest (landscape
  // frames in a wide window: two rows of two rather than four narrow columns).
  const box = frames.getBoundingClientRect();
  const sizes = photos.map((photo) => photo.image && photo.image.width ? [photo.image.width, photo.image.height] : [3, 2]);
  let best = 1, bestScale = 0;
  for (let columns = 1; columns <= photos.length; columns++) {
    const rows = Math.ceil(photos.length / columns);
    const cellWidth = box.width / columns, cellHeight = box.height / rows - FACTS_HEIGHT;
    const scale = Math.min(...sizes.map(([w, h]) => Math.min(cellWidth / w, cellHeight / h)));
    if (scale > bestScale * 1.02) { best = columns; bestScale = scale; }
  }
  return best;
}

function frameFor(photo, index) {
  const frame = el("div", "frame");
  frame.dataset.id = photo.id;
  frame.dataset.index = index;
  frame.classList.toggle("selected", index === state.selected);
  frame.classList.toggle("loupe", state.loupe);
  const view = el("div", "view");
  frame.append(view, factsFor(photo));
  attachPointer(view, index);
  return frame;
}

function factsFor(photo) {
  const facts = el("div", "facts");
  facts.append(el("span", "name", photo.name));
  if (photo.keeper) facts.append(el("span", "keeper-badge", "keeper"));
  for (const flag of photo.flags || []) facts.append(el("span", "flag", flag));
  facts.append(stateText(photo.state));
  const bits = [];
  if (photo.score !== null && photo.score !== undefined) bits.push(`score ${photo.score.toFixed(2)}`);
  if (photo.sharpness !== null && photo.sharpness !== undefined) bits.push(`sharpness ${photo.sharpness.toFixed(2)}`);
  if (photo.clipped) bits.push(`clipped ${(photo.clipped[0] * 100).toFixed(1)} % / ${(photo.clipped[1] * 100).toFixed(1)} %`);
  if (photo.taken) bits.push(photo.taken);
  if (photo.camera) bits.push(photo.camera);
  if (photo.exposureBias) bits.push(`${photo.exposureBias > 0 ? "+" : ""}${photo.exposureBias} EV`);
  const pixels = photo.image && photo.image.width ? [photo.image.width, photo.image.height] : photo.pixels;
  if (pixels && pixels[0]) bits.push(`${pixels[0]}×${pixels[1]}`);
  if (photo.fileSize) bits.push(photo.fileSize < 1e6 ? `${Math.round(photo.fileSize / 1e3)} KB` : `${(photo.fileSize / 1e6).toFixed(1)} MB`);
  if (photo.encoding) bits.push(photo.quality ? `${photo.encoding} q${photo.quality}` : photo.encoding);
  facts.append(el("span", "dim", bits.join(" · ")));
  const more = el("button", "more", "More like this");
  more.type = "button";
  more.title = "Photos that look like this one (M)";
  more.addEventListener("click", (event) => { event.stopPropagation(); moreLikeThis(photo.id); });
  facts.append(more);
  return facts;
}

function stateText(photoState) {
  // The person's rating and pick as every place of the photo holds them (decisions.current).
  const box = el("span", "state");
  if (!photoState) return box;
  const stars = photoState.stars;
  if (stars) box.append(el("span", "stars", "★".repeat(stars)));
  else if (stars === 0) box.append(el("span", "dim", "0 stars"));
  if (photoState.picked) box.append(el("span", "picked", " picked"));
  if (photoState.rejected) box.append(el("span", "rejected", " rejected"));
  if (photoState.unreachable && photoState.unreachable.length) {
    box.append(el("span", "dim", ` (${photoState.unreachable.length} place not read: ${photoState.unreachable[0].reason})`));
  }
  box.dataset.stars = stars === null || stars === undefined ? "" : String(stars);
  box.dataset.picked = String(Boolean(photoState.picked));
  box.dataset.rejected = String(Boolean(photoState.rejected));
  return box;
}

function updateMode() {
  const zoom = state.loupe ? `${Math.round(state.zoom * 100)} %` : "fit";
  $("#mode").textContent = `${state.compare ? "compare" : "single"} · ${zoom} · ? keys`;
  for (const frame of document.querySelectorAll(".frame")) frame.classList.toggle("loupe", state.loupe);
}

function paintAll() {
  for (const frame of document.querySelectorAll("#frames .frame")) paint(frame);
}

function paint(frame) {
  const photo = state.group.members[Number(frame.dataset.index)];
  const view = frame.querySelector(".view");
  const info = photo.image;
  if (!info || info.error) {
    view.replaceChildren(el("div", "missing", info && info.error ? info.error : "no picture"));
    frame.dataset.loaded = "error";
    return;
  }
  if (state.loupe) paintTiles(view, photo, frame);
  else paintFit(view, photo, frame);
}

function paintFit(view, photo, frame) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(view.clientWidth * ratio), height = Math.round(view.clientHeight * ratio);
  // ahead=1: a frame under review, which the server decodes at full resolution behind it
  // for the loupe (a gallery thumbnail asks without it)
  const src = `/api/photos/${photo.id}/image?w=${width}&h=${height}&v=${photo.version || 0}&ahead=1`;
  let img = view.querySelector("img.fit");
  if (img && img.getAttribute("src") === src) return;
  img = el("img", "fit");
  img.alt = photo.name;
  img.draggable = false;
  frame.dataset.loaded = "";
  img.addEventListener("load", () => { frame.dataset.loaded = "fit"; });
  img.addEventListener("error", () => { frame.dataset.loaded = "error"; });
  img.src = src;
  view.replaceChildren(img);
}

function paintTiles(view, photo, frame) {
  // The image point (cx, cy) of every compared frame sits at its view's centre, at the
  // same zoom: what one frame shows at 100 %, the others show at the same place.
  const width = photo.image.width, height = photo.image.height, zoom = state.zoom;
  const level = Math.max(0, Math.floor(Math.log2(1 / zoom) + 1e-9));
  const step = TILE * 2 ** level;  // original pixels a tile covers
  // On whole screen pixels (the view itself may sit between two): at 100 % one image
  // pixel is one screen pixel, not a blend of two.
  const box = view.getBoundingClientRect();
  const viewWidth = box.width, viewHeight = box.height;
  const left = Math.round(box.left + viewWidth / 2 - state.cx * width * zoom) - box.left;
  const top = Math.round(box.top + viewHeight / 2 - state.cy * height * zoom) - box.top;
  let layer = view.querySelector(".tiles");
  if (!layer) {
    layer = el("div", "tiles");
    view.replaceChildren(layer);
  }
  const wanted = new Map();
  const firstCol = Math.max(0, Math.floor(-left / (step * zoom)));
  const lastCol = Math.min(Math.ceil(width / step) - 1, Math.floor((viewWidth - left) / (step * zoom)));
  const firstRow = Math.max(0, Math.floor(-top / (step * zoom)));
  const lastRow = Math.min(Math.ceil(height / step) - 1, Math.floor((viewHeight - top) / (step * zoom)));
  for (let row = firstRow; row <= lastRow; row++) {
    for (let col = firstCol; col <= lastCol; col++) {
      wanted.set(`${level}/${col}/${row}`, [col, row]);
    }
  }
  for (const img of [...layer.children]) {
    if (!wanted.has(img.dataset.key)) img.remove();
  }
  let pending = 0;
  for (const [key, [col, row]] of wanted) {
    let img = layer.querySelector(`img[data-key="${key}"]`);
    const x = left + col * step * zoom, y = top + row * step * zoom;
    const tileWidth = Math.min(step, width - col * step) * zoom, tileHeight = Math.min(step, height - row * step) * zoom;
    if (!img) {
      img = el("img");
      img.dataset.key = key;
      img.alt = "";
      img.draggable = false;
      img.addEventListener("load", () => tileLoaded(frame));
      img.addEventListener("error", () => tileLoaded(frame));
      img.src = `/api/photos/${photo.id}/tiles/${key}?v=${photo.version || 0}`;
      layer.append(img);
    }
    if (!img.complete) pending += 1;
    Object.assign(img.style, { left: `${x}px`, top: `${y}px`, width: `${tileWidth}px`, height: `${tileHeight}px` });
  }
  frame.dataset.loaded = pending ? "" : "tiles";
}

function tileLoaded(frame) {
  const tiles = [...frame.querySelectorAll(".tiles img")];
  if (tiles.every((img) => img.complete)) frame.dataset.loaded = "tiles";
}

// --------------------------------------------------------------------------- zoom and pan, synced

function fitZoom(photo, view) {
  if (!photo.image || !photo.image.width) return 1;
  return Math.min(view.clientWidth / photo.image.width, view.clientHeight / photo.image.height, 1);
}

function setLoupe(on, at = null) {
  state.loupe = on;
  if (on) {
    state.zoom = 1;
    [state.cx, state.cy] = at || [0.5, 0.5];
  }
  updateMode();
  for (const frame of document.querySelectorAll("#frames .frame")) {
    frame.querySelector(".view").replaceChildren();
    paint(frame);
  }
}

function zoomBy(factor, around = null) {
  const photo = member();
  const view = document.querySelector(`.frame[data-index="${state.selected}"] .view`) || document.querySelector(".view");
  if (!photo || !photo.image || !photo.image.width || !view) return;
  if (!state.loupe) {
    state.loupe = true;
    state.zoom = fitZoom(photo, view);
    state.cx = 0.5; state.cy = 0.5;
  }
  const zoom = Math.min(MAX_ZOOM, Math.max(fitZoom(photo, view) / 2, state.zoom * factor));
  if (around) {  // keep the image point under the pointer where it is
    const [dx, dy] = around;
    state.cx += dx / photo.image.width * (1 / state.zoom - 1 / zoom);
    state.cy += dy / photo.image.height * (1 / state.zoom - 1 / zoom);
  }
  state.zoom = zoom;
  clampCentre();
  updateMode();
  paintAll();
}

function panBy(dx, dy) {
  const photo = member();
  if (!state.loupe || !photo || !photo.image || !photo.image.width) return;
  state.cx -= dx / (photo.image.width * state.zoom);
  state.cy -= dy / (photo.image.height * state.zoom);
  clampCentre();
  paintAll();
}

function clampCentre() {
  state.cx = Math.min(1, Math.max(0, state.cx));
  state.cy = Math.min(1, Math.max(0, state.cy));
}

function pointInImage(view, photo, event) {
  // The image point under the pointer, as a fraction of the image, in fit or loupe.
  const box = view.getBoundingClientRect();
  const px = event.clientX - box.left, py = event.clientY - box.top;
  const zoom = state.loupe ? state.zoom : fitZoom(photo, view);
  const cx = state.loupe ? state.cx : 0.5, cy = state.loupe ? state.cy : 0.5;
  return [cx + (px - box.width / 2) / (zoom * photo.image.width), cy + (py - box.height / 2) / (zoom * photo.image.height)];
}

function attachPointer(view, index) {
  const pointers = new Map();
  let moved = false, pinch = null;
  view.addEventListener("pointerdown", (event) => {
    view.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, [event.clientX, event.clientY]);
    moved = false;
    if (pointers.size === 2) pinch = distance(pointers);
  });
  view.addEventListener("pointermove", (event) => {
    if (!pointers.has(event.pointerId)) return;
    const [x, y] = pointers.get(event.pointerId);
    const dx = event.clientX - x, dy = event.clientY - y;
    if (Math.abs(dx) + Math.abs(dy) > 2) moved = true;
    pointers.set(event.pointerId, [event.clientX, event.clientY]);
    if (pointers.size === 2 && pinch) {
      const now = distance(pointers);
      zoomBy(now / pinch);
      pinch = now;
    } else if (pointers.size === 1 && state.loupe) {
      select(index, false);
      panBy(dx, dy);
    }
  });
  const release = (event) => {
    pointers.delete(event.pointerId);
    if (pointers.size < 2) pinch = null;
    if (event.type === "pointerup" && !moved && pointers.size === 0) select(index, false);
  };
  view.addEventListener("pointerup", release);
  view.addEventListener("pointercancel", release);
  view.addEventListener("dblclick", (event) => {
    const photo = state.group.members[index];
    if (!photo.image || !photo.image.width) return;
    select(index, false);
    if (state.loupe) setLoupe(false);
    else setLoupe(true, pointInImage(view, photo, event).map((v) => Math.min(1, Math.max(0, v))));
  });
  view.addEventListener("wheel", (event) => {
    event.preventDefault();
    const photo = state.group.members[index];
    if (!photo.image || !photo.image.width) return;
    select(index, false);
    const box = view.getBoundingClientRect();
    const around = [event.clientX - box.left - box.width / 2, event.clientY - box.top - box.height / 2];
    zoomBy(Math.exp(-event.deltaY * 0.002), state.loupe ? around : null);
  }, { passive: false });
}

function distance(pointers) {
  const [a, b] = [...pointers.values()];
  return Math.hypot(a[0] - b[0], a[1] - b[1]) || 1;
}

function select(index, rerender = true) {
  if (!state.group || index < 0 || index >= state.group.members.length) return;
  const wasShown = shownMembers().includes(index);
  state.selected = index;
  if (rerender || !wasShown) { render(); return; }
  for (const frame of document.querySelectorAll("#frames .frame")) {
    frame.classList.toggle("selected", Number(frame.dataset.index) === index);
  }
}

// --------------------------------------------------------------------------- decisions

async function decide(action, value = null) {
  const photo = member();
  if (!photo) return;
  const seen = photo.state ? photo.state.seen : null;
  const { status, ok, data } = await api(`/api/photos/${photo.id}/decision`, {
    method: "POST", body: JSON.stringify({ action, value, seen }),
  });
  if (status === 409) {
    notice(`${photo.name} was changed by someone else since it was shown: nothing written, shown again as it is now`, true);
    await reloadPhoto(photo.id);
    return;
  }
  if (!ok) { notice(`${photo.name}: ${data.error}`, true); return; }
  photo.state = data.state;
  const id = decisionId(data.decision);
  if (id !== null) state.undo.push({ decision: id, photo: photo.id });
  refreshFacts(photo);
  notice(`${photo.name}: ${action === "stars" ? `${value} stars` : action} (Ctrl+Z undoes)`);
}

function decisionId(decision) {
  for (const key of ["id", "decision_id", "run_id", "run"]) {
    if (decision && decision[key] !== undefined && decision[key] !== null) return decision[key];
  }
  return null;
}

async function undoLast() {
  const last = state.undo.pop();
  if (!last) { notice("nothing to undo"); return; }
  const { ok, data } = await api("/api/undo", { method: "POST", body: JSON.stringify({ decision: last.decision }) });
  if (!ok) { notice(`undo: ${data.error}`, true); return; }
  await reloadPhoto(last.photo);
  notice("undone");
}

async function reloadPhoto(id) {
  const { ok, data } = await api(`/api/photos/${id}`);
  if (!ok || !state.group) return;
  const at = state.group.members.findIndex((photo) => photo.id === id);
  if (at < 0) return;
  Object.assign(state.group.members[at], { state: data.state, flags: data.flags, version: data.version, image: data.image });
  refreshFacts(state.group.members[at]);
}

function refreshFacts(photo) {
  const frame = document.querySelector(`#frames .frame[data-id="${photo.id}"]`);
  if (frame) frame.querySelector(".facts").replaceWith(factsFor(photo));
}

// --------------------------------------------------------------------------- the gallery

async function showGallery() {
  showView("gallery");
  if (state.gallery) return;
  $("#gallery-count").textContent = "loading…";
  const { ok, data } = await api("/api/gallery");
  if (!ok) { $("#gallery-count").textContent = data.error; return; }
  const index = Object.fromEntries(data.columns.map((name, i) => [name, i]));
  const folders = data.folders;
  const photos = data.photos.map((row) => {
    const photo = Object.fromEntries(Object.entries(index).map(([name, i]) => [name, row[i]]));
    photo.folderPath = folders[photo.folder].path;
    return photo;
  });
  const keepers = new Set(data.groups.map((group) => group.keeper));
  state.gallery = { data, photos, keepers, grouped: new Set(data.groups.flatMap((group) => group.members)) };
  setUpFilters();
  applyFilters();
}

function countBy(values) {
  const counts = new Map();
  for (const value of values) counts.set(value, (counts.get(value) || 0) + 1);
  return counts;
}

function fillSelect(select, choices) {
  select.replaceChildren(...choices.map(([value, label]) => { const option = el("option", "", label); option.value = value; return option; }));
}

function starsLabel(stars) { return stars < 0 ? "rejected" : stars === 0 ? "0 stars" : "★".repeat(stars); }

function setUpFilters() {
  const { photos, data } = state.gallery;
  const starChoices = (counts) => [...counts].sort((a, b) => b[0] - a[0]).map(([stars, n]) => [String(stars), `${starsLabel(stars)} (${n})`]);
  fillSelect($("#filter-stars"), [["", "any"], ...starChoices(countBy(photos.map((p) => p.stars)))]);
  const written = photos.flatMap((p) => Object.values(p.written || {}).filter((stars) => stars !== null));
  fillSelect($("#filter-written"), [["", "any"], ["none", `none (${photos.filter((p) => !p.written).length})`], ...starChoices(countBy(written))]);
  fillSelect($("#filter-folder"), [["", "all folders"], ...data.folders.slice().sort((a, b) => a.label.localeCompare(b.label)).map((f) => [f.path, f.label])]);
  for (const control of document.querySelectorAll("#filters select, #filters input")) control.addEventListener("change", applyFilters);
}

function matches(photo, filter) {
  // The static gallery's filters (report_template.html), over the same data.
  const { keepers, grouped, data } = state.gallery;
  if (filter.errorsOnly && !photo.error) return false;
  if (filter.stars !== "" && photo.stars !== Number(filter.stars)) return false;
  if (filter.written === "none" && photo.written) return false;
  if (filter.written !== "" && filter.written !== "none" && !Object.values(photo.written || {}).includes(Number(filter.written))) return false;
  if (filter.folder !== "" && photo.folderPath !== filter.folder && !photo.folderPath.startsWith(filter.folder + data.separator)) return false;
  if (filter.keepersOnly && grouped.has(photo.id) && !keepers.has(photo.id)) return false;
  if (filter.flaggedOnly && !photo.flags) return false;
  return true;
}

function applyFilters() {
  const filter = {
    stars: $("#filter-stars").value, written: $("#filter-written").value, folder: $("#filter-folder").value,
    errorsOnly: $("#filter-errors").checked, keepersOnly: $("#filter-keepers").checked, flaggedOnly: $("#filter-flagged").checked,
  };
  state.passing = state.gallery.photos.filter((photo) => matches(photo, filter));
  state.shown = 0;
  state.cell = state.passing.length ? 0 : -1;
  $("#grid").replaceChildren();
  $("#gallery-count").textContent = `${state.passing.length} photos, best first`;
  addCells();
}

function addCells() {
  const grid = $("#grid");
  const end = Math.min(state.passing.length, state.shown + GRID_PAGE);
  for (let i = state.shown; i < end; i++) grid.append(cellFor(state.passing[i], i, () => { state.cell = i; openPhoto(state.passing[i].id); }));
  state.shown = end;
  markCell();
}

function cellFor(photo, i, open) {
  const cell = el("div", "cell");
  cell.dataset.id = photo.id;
  cell.dataset.index = i;
  if (photo.error || photo.id < 0) {
    cell.append(el("div", "placeholder", photo.error || "not indexed"));
  } else {
    const img = el("img");
    img.loading = "lazy";
    img.alt = photo.name;
    img.src = `/api/photos/${photo.id}/image?w=256&h=256`;
    cell.append(img);
  }
  const score = photo.score === null || photo.score === undefined ? "" : photo.score.toFixed(2);
  const extra = photo.similarity !== undefined ? `sim ${Number(photo.similarity).toFixed(3)} · ` : "";
  cell.append(el("div", "caption", `${extra}${score} ${photo.name}`));
  cell.title = photo.name;
  if (photo.id >= 0) cell.addEventListener("click", open);
  return cell;
}

function markCell() {
  for (const cell of document.querySelectorAll("#grid .cell.selected")) cell.classList.remove("selected");
  const cell = document.querySelector(`#grid .cell[data-index="${state.cell}"]`);
  if (cell) { cell.classList.add("selected"); cell.scrollIntoView({ block: "nearest" }); }
}

function moveCell(step) {
  if (!state.passing.length) return;
  state.cell = Math.min(state.passing.length - 1, Math.max(0, state.cell + step));
  while (state.cell >= state.shown) addCells();
  markCell();
}

function columnsInGrid(grid) {
  return getComputedStyle(grid).gridTemplateColumns.split(" ").length || 1;
}

// --------------------------------------------------------------------------- search

async function search(text) {
  const rank = $("#rank-score").checked ? "score" : "similarity";
  showResults(`searching “${text}”…`, []);
  const { ok, data } = await api(`/api/search?q=${encodeURIComponent(text)}&rank=${rank}&n=60`);
  if (!ok) { showResults(data.error, []); return; }
  showResults(`“${text}”, ranked by ${rank}`, data.results);
}

async function moreLikeThis(id) {
  showResults("looking for photos like this one…", []);
  const { ok, data } = await api(`/api/photos/${id}/similar?n=60`);
  if (!ok) { showResults(data.error, []); return; }
  showResults("More like this", data.results);
}

function showResults(title, results) {
  state.results = results;
  state.resultIndex = results.length ? 0 : -1;
  $("#results-title").textContent = results.length || title.endsWith("…") ? title : `${title}: nothing found`;
  $("#results-grid").replaceChildren(...results.map((photo, i) => cellFor(photo, i, () => { closeResults(); openPhoto(photo.id); })));
  $("#results").hidden = false;
  markResult();
}

function markResult() {
  for (const cell of document.querySelectorAll("#results-grid .cell")) cell.classList.toggle("selected", Number(cell.dataset.index) === state.resultIndex);
}

function closeResults() { $("#results").hidden = true; }

// --------------------------------------------------------------------------- views and keys

function showView(name) {
  state.view = name;
  $("#review").hidden = name !== "review";
  $("#gallery").hidden = name !== "gallery";
  $("#show-review").classList.toggle("active", name === "review");
  $("#show-gallery").classList.toggle("active", name === "gallery");
  if (name === "review") requestAnimationFrame(paintAll);
}

function toggleHelp(show = $("#help").hidden) { $("#help").hidden = !show; }

function onKey(event) {
  const typing = event.target instanceof HTMLInputElement && event.target.type !== "checkbox";
  if (typing) {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  const key = event.key;
  if ((event.ctrlKey || event.metaKey) && key.toLowerCase() === "z") { event.preventDefault(); undoLast(); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (key === "?") { toggleHelp(); return; }
  if (key === "Escape") {
    if (!$("#help").hidden) toggleHelp(false);
    else if (!$("#results").hidden) closeResults();
    else if (state.loupe) setLoupe(false);
    return;
  }
  if (key === "/") { event.preventDefault(); $("#search").focus(); return; }
  if (key === "g" || key === "G") { if (state.view === "review") showGallery(); else showView("review"); return; }
  if (!$("#results").hidden) { resultKey(event); return; }
  if (state.view === "gallery") { galleryKey(event); return; }
  reviewKey(event);
}

function resultKey(event) {
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columnsInGrid($("#results-grid")), ArrowUp: -columnsInGrid($("#results-grid")) }[event.key];
  if (step) {
    event.preventDefault();
    state.resultIndex = Math.min(state.results.length - 1, Math.max(0, state.resultIndex + step));
    markResult();
  } else if (event.key === "Enter" && state.resultIndex >= 0) {
    const id = state.results[state.resultIndex].id;
    closeResults();
    openPhoto(id);
  }
}

function galleryKey(event) {
  const columns = columnsInGrid($("#grid"));
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }[event.key];
  if (step) { event.preventDefault(); moveCell(step); }
  else if (event.key === "Enter" && state.cell >= 0) openPhoto(state.passing[state.cell].id);
}

function reviewKey(event) {
  const key = event.key;
  if (!state.group) return;
  const pan = 0.25;
  if (event.shiftKey && key.startsWith("Arrow") && state.loupe) {
    event.preventDefault();
    const view = document.querySelector("#frames .view");
    const dx = { ArrowLeft: 1, ArrowRight: -1 }[key] || 0, dy = { ArrowUp: 1, ArrowDown: -1 }[key] || 0;
    panBy(dx * view.clientWidth * pan, dy * view.clientHeight * pan);
    return;
  }
  const actions = {
    ArrowRight: () => select(state.selected + 1), ArrowDown: () => select(state.selected + 1),
    ArrowLeft: () => select(state.selected - 1), ArrowUp: () => select(state.selected - 1),
    PageDown: () => showGroup(state.groupIndex + 1), "]": () => showGroup(state.groupIndex + 1),
    PageUp: () => showGroup(state.groupIndex - 1), "[": () => showGroup(state.groupIndex - 1),
    p: () => decide("pick"), x: () => decide("reject"), u: () => decide("unmark"),
    z: () => setLoupe(!state.loupe), c: () => { state.compare = !state.compare; render(); },
    m: () => member() && moreLikeThis(member().id),
    "+": () => zoomBy(1.25), "=": () => zoomBy(1.25), "-": () => zoomBy(0.8),
  };
  const lower = key.length === 1 ? key.toLowerCase() : key;
  if (actions[lower]) { event.preventDefault(); actions[lower](); return; }
  if (/^[0-5]$/.test(key)) { event.preventDefault(); decide("stars", Number(key)); }
}

function wire() {
  document.addEventListener("keydown", onKey);
  $("#show-review").addEventListener("click", () => showView("review"));
  $("#show-gallery").addEventListener("click", showGallery);
  $("#help-button").addEventListener("click", () => toggleHelp());
  $("#close-results").addEventListener("click", closeResults);
  $("#previous-group").addEventListener("click", () => showGroup(state.groupIndex - 1));
  $("#next-group").addEventListener("click", () => showGroup(state.groupIndex + 1));
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#search").value.trim();
    if (text) { $("#search").blur(); search(text); }
  });
  $("#grid").addEventListener("scroll", () => {
    const grid = $("#grid");
    if (grid.scrollTop + grid.clientHeight > grid.scrollHeight - 600 && state.shown < state.passing.length) addCells();
  });
  window.addEventListener("resize", () => { if (state.view === "review") paintAll(); });
}

wire();
start();
