// Shoal portal: live pages over server-sent events. Plain JavaScript, no build step, no dependencies.
"use strict";

(function () {
  const STATE_NAMES = {
    idle: "Idle", running: "Running", creating: "Creating", starting: "Starting",
    waitingforstarttask: "Waiting for start task", starttaskfailed: "Start task failed", unusable: "Unusable",
    rebooting: "Rebooting", reimaging: "Reimaging", offline: "Offline", leavingpool: "Leaving pool",
    preempted: "Preempted",
  };

  function showProblem(problem) {
    const box = document.getElementById("live-problem");
    if (box) {
      box.textContent = problem.code + ": " + problem.message;
      box.hidden = false;
    }
  }

  // One EventSource per page. "failed" (the API's error, e.g. the pool was deleted or a role removed) and "end"
  // close it; otherwise the browser reconnects by itself and the server starts again with the whole view.
  function listen(url, handlers) {
    const source = new EventSource(url);
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => handle(JSON.parse(e.data)));
    }
    source.addEventListener("failed", (e) => { showProblem(JSON.parse(e.data)); source.close(); });
    source.addEventListener("end", () => source.close());
    return source;
  }

  function setFields(root, values) {
    for (const el of root.querySelectorAll("[data-field]")) {
      const key = el.dataset.field;
      if (key in values && el.children.length === 0) {
        el.textContent = values[key] === null || values[key] === undefined ? "" : String(values[key]);
      }
    }
  }

  // --- the pool's node heatmap --------------------------------------------------------------------------------
  function heatmap(root, pool) {
    const grid = root.querySelector(".grid");
    const legend = document.getElementById("legend");
    const base = root.dataset.nodeBase;
    const cells = new Map();
    for (const el of grid.children) cells.set(el.dataset.id, el);

    function sizeGrid() {
      grid.classList.toggle("small", cells.size > 200 && cells.size <= 1000);
      grid.classList.toggle("tiny", cells.size > 1000);
    }

    // Apply one event: {set: [[id, state], ...], remove: [id, ...], full: bool}. Cells are updated in place;
    // new nodes are appended (in one fragment); a full event also drops cells of nodes that are gone.
    function apply(msg) {
      performance.mark("heatmap-apply-start");
      if (msg.full) {
        const keep = new Set(msg.set.map((pair) => pair[0]));
        for (const [id, el] of cells) {
          if (!keep.has(id)) { el.remove(); cells.delete(id); }
        }
      }
      let added = null;
      for (const [id, state] of msg.set) {
        let el = cells.get(id);
        if (el === undefined) {
          el = document.createElement("a");
          el.dataset.id = id;
          el.href = base + encodeURIComponent(id);
          el.setAttribute("role", "listitem");
          cells.set(id, el);
          (added = added || document.createDocumentFragment()).appendChild(el);
        }
        const cls = "cell s-" + state;
        if (el.className !== cls) {
          el.className = cls;
          el.title = id + ": " + (STATE_NAMES[state] || state);
        }
      }
      if (added) grid.appendChild(added);
      for (const id of msg.remove || []) {
        const el = cells.get(id);
        if (el !== undefined) { el.remove(); cells.delete(id); }
      }
      sizeGrid();
      performance.mark("heatmap-apply-end");
      performance.measure("heatmap-apply", "heatmap-apply-start", "heatmap-apply-end");
      // ...and until the browser has laid out and painted the change (the next frame).
      requestAnimationFrame(() => setTimeout(() => {
        performance.mark("heatmap-frame-end");
        performance.measure("heatmap-frame", "heatmap-apply-start", "heatmap-frame-end");
        grid.dataset.applied = String(Number(grid.dataset.applied || 0) + 1);
      }, 0));
    }

    function showPool(summary) {
      setFields(pool, summary);
      // The resize form offers the current targets, unless the user is typing in it.
      for (const [name, key] of [["dedicated", "target_dedicated"], ["lowpriority", "target_low_priority"]]) {
        const input = document.querySelector(`#resize-form input[name=${name}]`);
        if (input && document.activeElement !== input && input.value === input.defaultValue) {
          input.value = input.defaultValue = String(summary[key]);
        }
      }
      const nodes = document.querySelector("[data-field=nodes]");
      if (nodes) nodes.textContent = String(summary.nodes);
      const items = Object.entries(summary.counts).sort((a, b) => b[1] - a[1]);
      legend.replaceChildren(...items.map(([state, n]) => {
        const li = document.createElement("li");
        li.dataset.state = state;
        const chip = document.createElement("span");
        chip.className = "chip s-" + state;
        li.append(chip, (STATE_NAMES[state] || state) + " " + n);
        return li;
      }));
      const list = document.getElementById("resize-errors");
      list.replaceChildren(...summary.resizeErrors.map((e) => {
        const li = document.createElement("li");
        const code = document.createElement("b");
        code.textContent = e.code;
        li.append(code, " " + e.message);
        return li;
      }));
      document.getElementById("no-resize-errors").hidden = summary.resizeErrors.length > 0;
    }

    window.shoalHeatmap = { apply, cells };  // the browser tests measure updates through it
    sizeGrid();
    listen(pool.dataset.events, { nodes: apply, pool: showPool });
  }

  // --- a job: task counts (now and over time) and the states of listed tasks -------------------------------------
  const SVG = "http://www.w3.org/2000/svg";

  function svg(name, attrs) {
    const el = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function duration(seconds) {
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  // The chart: one line per count (active, running, succeeded, failed) against time since the job was created.
  function drawTimeline(box, timeline) {
    const width = Math.max(320, box.clientWidth), height = 180, left = 34, bottom = 18, top = 8;
    const series = ["active", "running", "succeeded", "failed"];
    const most = Math.max(1, ...timeline.points.map((p) => Math.max(p[1], p[2], p[3], p[4])));
    const x = (s) => left + (width - left - 4) * (s / timeline.seconds);
    const y = (n) => top + (height - top - bottom) * (1 - n / most);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}` });
    chart.append(svg("line", { class: "axis", x1: left, y1: y(0), x2: width, y2: y(0) }),
                 svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }));
    const label = (text, attrs) => { const t = svg("text", attrs); t.textContent = text; return t; };
    chart.append(label(String(most), { x: left - 6, y: top + 8, "text-anchor": "end" }),
                 label("0", { x: left - 6, y: y(0), "text-anchor": "end" }),
                 label(duration(timeline.seconds), { x: width - 4, y: height - 4, "text-anchor": "end" }));
    series.forEach((name, i) => {
      const points = timeline.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[i + 1]).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { class: "line-" + name, points, "data-series": name }));
    });
    box.replaceChildren(chart);
    box.dataset.last = JSON.stringify(timeline.points[timeline.points.length - 1]);
    document.getElementById("timeline-span").textContent = "since the job was created, " + duration(timeline.seconds);
  }

  function job(root) {
    const table = document.getElementById("tasks");
    const filter = table ? table.dataset.filter : "";
    const chart = document.getElementById("timeline");
    listen(root.dataset.events, {
      timeline: (timeline) => drawTimeline(chart, timeline),
      job: (msg) => {
        setFields(root, { state: msg.state });
        for (const el of root.querySelectorAll("[data-count]")) {
          el.textContent = String(msg.counts[el.dataset.count] || 0);
        }
      },
      tasks: (changed) => {
        let unseen = false;
        for (const [id, state] of Object.entries(changed)) {
          const row = table ? table.querySelector(`tr[data-task="${CSS.escape(id)}"]`) : null;
          if (row === null) { if (!filter || filter === state) unseen = true; continue; }
          const cell = row.querySelector(".state span");
          cell.textContent = state;
          cell.className = "tstate t-" + state;
        }
        if (unseen) document.getElementById("new-tasks").hidden = false;
      },
    });
  }

  // --- a task: its state and its output as it is written ---------------------------------------------------------
  function task(root) {
    const panes = {};
    for (const pre of document.querySelectorAll("pre[data-file]")) panes[pre.dataset.file] = pre;
    listen(root.dataset.events, {
      task: (t) => {
        setFields(root, { exit_code: t.exit_code, start_time: t.start_time, end_time: t.end_time });
        const node = root.querySelector("[data-field=node_id]");
        if (t.node_id && node.textContent !== t.node_id) {
          const link = document.createElement("a");
          link.href = root.dataset.nodeBase + encodeURIComponent(t.pool_id) + "/nodes/" + encodeURIComponent(t.node_id);
          link.textContent = t.node_id;
          node.replaceChildren(link);
        }
        const state = root.querySelector("[data-field=state] span");
        state.textContent = t.state;
        state.className = "tstate t-" + t.state;
        for (const el of document.querySelectorAll("[data-follow]")) {
          el.textContent = t.state === "completed" ? "" : "following…";
        }
      },
      output: (chunk) => {
        const pre = panes[chunk.file];
        const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 20;
        pre.append(chunk.text);
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      },
    });
  }

  function start() {
    for (const form of document.querySelectorAll("form[data-confirm]")) {
      form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
    }
    for (const el of document.querySelectorAll("[data-mtime]")) {
      el.textContent = new Date(Number(el.dataset.mtime) * 1000).toLocaleString();
    }
    const heat = document.getElementById("heatmap");
    if (heat) heatmap(heat, document.getElementById("pool"));
    const jobRoot = document.getElementById("job");
    if (jobRoot) job(jobRoot);
    const taskRoot = document.getElementById("task");
    if (taskRoot) task(taskRoot);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
