// The ctxhost console: polls GET /admin/topology about once a second with the admin token
// and shows it as a graph (Cytoscape.js), as tables (also what tests and screen readers
// read: data-node, data-edge, data-breaker ...) and as side panels.
//
// The token comes from the URL fragment (#token=...; removed from the address bar at once),
// else from this tab's session storage, else from the form. Nothing is shown without it,
// and a token the host refuses is forgotten.
"use strict";

(function () {
  const TOKEN_KEY = "ctxhost-admin-token";
  const POLL_MS = 1000;
  const TIMEOUT_MS = 5000;
  const BREAKER_COLOURS = {
    closed: "#2e9d4f",
    "half-open": "#e0a100",
    open: "#d62d20",
    disabled: "#8a8f98",
  };

  const $ = (id) => document.getElementById(id);
  let cy = null;
  let layoutKey = "";
  let timer = null;
  let updates = 0;

  // --- the token ---------------------------------------------------------------------

  function tokenFromFragment() {
    const hash = window.location.hash.replace(/^#/, "");
    if (!hash) return null;
    const params = new URLSearchParams(hash);
    const token = params.get("token");
    // Out of the address bar and the history at once, whatever it held.
    history.replaceState(null, "", window.location.pathname + window.location.search);
    return token && token.trim() ? token.trim() : null;
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return null;
    }
  }

  function keepToken(t) {
    try {
      sessionStorage.setItem(TOKEN_KEY, t);
    } catch (e) {
      // Storage refused (private mode): the token lives only as long as the page.
      memoryToken = t;
    }
  }
  let memoryToken = null;

  function currentToken() {
    return token() || memoryToken;
  }

  function forgetToken() {
    memoryToken = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {
      // nothing kept
    }
  }

  // --- showing and hiding ------------------------------------------------------------

  function setStatus(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = kind || "";
  }

  function askForToken(message) {
    stopPolling();
    clearAll();
    $("console").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    setStatus("no token", "warn");
    $("token").focus();
  }

  function showConsole() {
    $("login").hidden = true;
    $("console").hidden = false;
    $("forget").hidden = false;
  }

  function clearAll() {
    for (const id of ["nodes", "calls", "events"]) {
      $(id).tBodies[0].replaceChildren();
    }
    $("deployments").replaceChildren();
    if (cy) {
      cy.destroy();
      cy = null;
      layoutKey = "";
    }
    document.body.removeAttribute("data-updates");
  }

  // --- polling -----------------------------------------------------------------------

  function stopPolling() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }

  function schedule() {
    stopPolling();
    timer = setTimeout(poll, POLL_MS);
  }

  async function poll() {
    timer = null;
    const t = currentToken();
    if (!t) {
      askForToken();
      return;
    }
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const res = await fetch("/admin/topology", {
        headers: { Authorization: "Bearer " + t, Accept: "application/json" },
        cache: "no-store",
        signal: abort.signal,
      });
      if (res.status === 401) {
        forgetToken();
        askForToken("The host refused this token.");
        return;
      }
      if (!res.ok) {
        setStatus("the host answered " + res.status, "bad");
      } else {
        const topology = await res.json();
        if (!currentToken()) return; // forgotten meanwhile
        showConsole();
        render(topology);
        setStatus("live", "ok");
      }
    } catch (e) {
      setStatus("cannot reach the host (" + (e.name === "AbortError" ? "timeout" : e.message) + ")", "bad");
    } finally {
      clearTimeout(timeout);
    }
    if (currentToken()) schedule();
  }

  // --- formatting --------------------------------------------------------------------

  function perSec(v) {
    return (v || 0).toFixed(v >= 100 ? 0 : 1) + "/s";
  }

  function percent(v) {
    const p = (v || 0) * 100;
    return (p > 0 && p < 1 ? p.toFixed(1) : p.toFixed(0)) + "%";
  }

  function ms(v) {
    if (v === null || v === undefined) return "-";
    return (v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " ms";
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function row(attrs, cells) {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs)) tr.setAttribute(k, v);
    for (const c of cells) tr.appendChild(c);
    return tr;
  }

  // --- rendering ---------------------------------------------------------------------

  function render(t) {
    renderTables(t);
    renderPanels(t);
    renderGraph(t);
    updates += 1;
    document.body.setAttribute("data-updates", String(updates));
  }

  function renderTables(t) {
    $("nodes").tBodies[0].replaceChildren(
      ...t.nodes.map((n) =>
        row(
          { "data-node": n.name, "data-version": n.version, "data-health": n.health },
          [
            cell(n.name),
            cell(n.version + " (" + n.id + ")"),
            cell(n.health, n.health === "running" ? "ok" : "bad"),
            cell(n.inFlight + " / " + n.idle),
            cell(perSec(n.requests.perSec)),
            cell(percent(n.requests.errorRatio)),
            cell(ms(n.requests.p99Ms)),
          ]
        )
      )
    );
    $("calls").tBodies[0].replaceChildren(
      ...t.calls.map((c) =>
        row(
          { "data-edge": c.caller + "->" + c.target, "data-breaker": c.breaker },
          [
            cell(c.caller + " -> " + c.target),
            cell(c.breaker, "breaker " + c.breaker),
            cell(perSec(c.rate.perSec)),
            cell(percent(c.rate.errorRatio)),
            cell(ms(c.rate.p99Ms)),
            cell(c.interfaces.join(", ")),
          ]
        )
      )
    );
    $("events").tBodies[0].replaceChildren(
      ...t.events.map((e) =>
        row(
          { "data-event-edge": e.publisher + "->" + e.subscriber, "data-lag": String(e.lag) },
          [
            cell(e.publisher + " -> " + e.subscriber),
            cell(perSec(e.perSec)),
            cell(String(e.lag), e.lag > 0 ? "warn" : ""),
            cell(e.types.map((x) => x.eventType).join(", ")),
          ]
        )
      )
    );
  }

  function renderPanels(t) {
    const b = t.broker;
    const broker = $("broker");
    let text = b.transport + ": " + b.state;
    if (b.outboxPending !== null && b.outboxPending !== undefined) {
      text += ", " + b.outboxPending + " waiting in the outbox";
    }
    broker.textContent = text;
    broker.title = b.detail || "";
    broker.setAttribute("data-broker", b.state);
    broker.className = b.ready ? "ok" : "bad";

    const dl = $("dead-letters");
    const count = t.deadLetters;
    dl.textContent = count === null || count === undefined ? "unknown (storage)" : String(count);
    dl.setAttribute("data-dead-letters", count === null || count === undefined ? "" : String(count));
    dl.className = count > 0 ? "bad" : "ok";

    $("window").textContent = t.windowS > 0 ? "the last " + t.windowS.toFixed(0) + " s" : "-";
    $("updated").textContent = new Date(t.at).toLocaleTimeString();
    $("updated").setAttribute("data-at", t.at);

    const list = $("deployments");
    if (t.deployments.length === 0) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "none since the host started";
      list.replaceChildren(li);
    } else {
      list.replaceChildren(
        ...t.deployments.map((d) => {
          const li = document.createElement("li");
          li.className = d.outcome === "ok" ? d.action : "refused";
          li.setAttribute("data-deployment", d.context);
          const when = document.createElement("time");
          when.dateTime = d.at;
          when.textContent = new Date(d.at).toLocaleTimeString();
          const what = document.createElement("span");
          what.textContent =
            " " + d.context + " " + d.action + " " + d.version + " (" + d.trigger + ", " + d.outcome + ")";
          li.append(when, what);
          if (d.detail) li.title = d.detail;
          return li;
        })
      );
    }
  }

  // --- the graph ---------------------------------------------------------------------

  function nodeLabel(n) {
    return (
      n.name + " " + n.version + "\n" +
      n.health + " · " + n.inFlight + "/" + n.idle + " inst\n" +
      perSec(n.requests.perSec) + " · p99 " + ms(n.requests.p99Ms)
    );
  }

  function elements(t) {
    const els = [];
    const names = new Set(t.nodes.map((n) => n.name));
    for (const n of t.nodes) {
      els.push({
        group: "nodes",
        data: { id: "n:" + n.name, label: nodeLabel(n), health: n.health },
      });
    }
    // An event publisher that runs in another process has no node here: show it anyway.
    for (const e of t.events) {
      if (!names.has(e.publisher)) {
        names.add(e.publisher);
        els.push({
          group: "nodes",
          data: { id: "n:" + e.publisher, label: e.publisher + "\n(elsewhere)", health: "external" },
        });
      }
    }
    for (const c of t.calls) {
      els.push({
        group: "edges",
        data: {
          id: "c:" + c.caller + "->" + c.target,
          source: "n:" + c.caller,
          target: "n:" + c.target,
          kind: "call",
          colour: BREAKER_COLOURS[c.breaker] || BREAKER_COLOURS.disabled,
          label:
            "breaker " + c.breaker + "\n" + perSec(c.rate.perSec) + " · " +
            percent(c.rate.errorRatio) + " err · p99 " + ms(c.rate.p99Ms),
        },
      });
    }
    for (const e of t.events) {
      els.push({
        group: "edges",
        data: {
          id: "e:" + e.publisher + "->" + e.subscriber,
          source: "n:" + e.publisher,
          target: "n:" + e.subscriber,
          kind: "event",
          label: perSec(e.perSec) + " · lag " + e.lag,
        },
      });
    }
    return els;
  }

  function style() {
    return [
      {
        selector: "node",
        style: {
          shape: "round-rectangle",
          width: 172,
          height: 60,
          "background-color": "#f4f6fa",
          "border-width": 2,
          "border-color": "#4a5568",
          label: "data(label)",
          "text-wrap": "wrap",
          "text-valign": "center",
          "text-halign": "center",
          "font-size": 12,
          color: "#1a202c",
        },
      },
      { selector: 'node[health = "unhealthy"]', style: { "border-color": "#d62d20", "background-color": "#fde8e7" } },
      { selector: 'node[health = "external"]', style: { "border-style": "dashed", "background-color": "#ffffff" } },
      {
        selector: "edge",
        style: {
          "curve-style": "bezier",
          "target-arrow-shape": "triangle",
          label: "data(label)",
          "font-size": 11,
          "text-wrap": "wrap",
          "text-outline-color": "#ffffff",
          "text-outline-width": 3,
          "text-rotation": "autorotate",
        },
      },
      {
        selector: 'edge[kind = "call"]',
        style: { width: 4, "line-color": "data(colour)", "target-arrow-color": "data(colour)", color: "#1a202c" },
      },
      {
        selector: 'edge[kind = "event"]',
        style: { width: 2, "line-style": "dashed", "line-color": "#5b6fd6", "target-arrow-color": "#5b6fd6", color: "#3c4a9e" },
      },
    ];
  }

  function roots(t) {
    const called = new Set(t.calls.map((c) => c.target));
    const callers = t.calls.map((c) => c.caller).filter((c) => !called.has(c));
    if (callers.length) return [...new Set(callers)].map((n) => "n:" + n);
    const subscribed = new Set(t.events.map((e) => e.subscriber));
    const sources = t.nodes.map((n) => n.name).filter((n) => !subscribed.has(n));
    return (sources.length ? sources : t.nodes.slice(0, 1).map((n) => n.name)).map((n) => "n:" + n);
  }

  function renderGraph(t) {
    if (typeof window.cytoscape !== "function") return; // the tables still show everything
    const els = elements(t);
    if (!cy) {
      cy = window.cytoscape({
        container: $("graph"),
        style: style(),
        minZoom: 0.3,
        maxZoom: 1.5,
      });
    }
    const wanted = new Set(els.map((e) => e.data.id));
    cy.batch(() => {
      cy.elements().forEach((el) => {
        if (!wanted.has(el.id())) el.remove();
      });
      for (const e of els) {
        const existing = cy.getElementById(e.data.id);
        if (existing.nonempty()) existing.data(e.data);
        else cy.add(e);
      }
    });
    // Lay out again only when the graph's shape changed, so it holds still while live.
    const key = [...wanted].sort().join("|");
    if (key !== layoutKey) {
      layoutKey = key;
      cy.layout({
        name: "breadthfirst",
        directed: true,
        roots: roots(t),
        spacingFactor: 1.25,
        padding: 30,
        animate: false,
        // Left to right: the graph panel is wider than it is high.
        transform: (node, p) => ({ x: p.y, y: p.x }),
      }).run();
      cy.fit(undefined, 30);
    }
  }

  // --- start -------------------------------------------------------------------------

  function start() {
    const fromUrl = tokenFromFragment();
    if (fromUrl) keepToken(fromUrl);
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (!t) return;
      $("token").value = "";
      keepToken(t);
      setStatus("connecting", "");
      poll();
    });
    $("forget").addEventListener("click", () => {
      forgetToken();
      askForToken();
    });
    window.addEventListener("hashchange", () => {
      const t = tokenFromFragment();
      if (t) {
        keepToken(t);
        poll();
      }
    });
    if (currentToken()) {
      setStatus("connecting", "");
      poll();
    } else {
      askForToken();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
