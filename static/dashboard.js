// The tenant dashboard: fetch /api/v1/dashboard/ with the console's session and draw it with
// KcmCharts (static/charts.js). Refreshes every 30 s. No inline code or style: CSP-clean.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root || !window.KcmCharts) { return; }
  var url = root.getAttribute("data-url");
  var windowName = "day";
  var last = null;

  function $(id) { return root.querySelector('[data-testid="' + id + '"]'); }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function label(iso, unit) {
    var d = new Date(iso);
    return pad(d.getUTCHours()) + ":" + (unit === "hour" ? "00" : pad(d.getUTCMinutes()));
  }

  function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "—"; }

  function cell(row, value, className) {
    var td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "—" : String(value);
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function table(id, items, columns, empty) {
    var body = $(id);
    body.textContent = "";
    if (!items.length) {
      var row = document.createElement("tr");
      var td = cell(row, empty, "muted");
      td.colSpan = columns.length;
      body.appendChild(row);
      return;
    }
    items.forEach(function (item) {
      var row = document.createElement("tr");
      columns.forEach(function (column) { column(row, item); });
      body.appendChild(row);
    });
  }

  function state(row, value) { cell(row, value, "state state-" + value); }

  function drawOperations(data) {
    var win = data.operations[windowName];
    var labels = win.buckets.map(function (b) { return label(b, win.unit); });
    var series = win.series.map(function (s) { return { name: s.service_key, values: s.counts }; });
    if (win.other.service_keys > 0) {
      series.push({ name: win.other.service_keys + " other keys", values: win.other.counts, color: "#98a2b3" });
    }
    if (!series.length) { series = [{ name: "no operations", values: labels.map(function () { return 0; }) }]; }
    var total = 0;
    series.forEach(function (s) { s.values.forEach(function (c) { total += c; }); });
    $("ops-total").textContent = String(total);
    KcmCharts.line($("ops-chart"), {
      label: "Data-key operations per service key", labels: labels, series: series
    });
    KcmCharts.bars($("refused-chart"), {
      label: "Refused and failed requests", labels: labels,
      series: [
        { name: "denied", values: win.denied, color: "#b54708" },
        { name: "error", values: win.error, color: "#b42318" }
      ]
    });
    root.querySelectorAll("[data-window]").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-window") === windowName));
    });
  }

  function render(data) {
    last = data;
    drawOperations(data);
    var usage = data.gcm_usage;
    KcmCharts.gauges($("usage-chart"), {
      label: "GCM usage per service-key version",
      rows: usage.versions.map(function (v) {
        return {
          label: v.service_key + " v" + v.version + (v.primary ? " (primary)" : ""),
          value: v.used, max: usage.limit, mark: usage.safety_limit,
          title: v.service_key + " v" + v.version + ": " + v.used + " of " + usage.limit
        };
      })
    });
    table("due-rows", data.rotations_due, [
      function (r, d) { cell(r, d.name); }, function (r, d) { cell(r, d.level); },
      function (r, d) { cell(r, d.when === "due" ? "due now" : "within 7 days", d.when === "due" ? "bad" : ""); }
    ], "No key is due for rotation.");
    table("manager-rows", data.key_managers, [
      function (r, m) { cell(r, m.name); }, function (r, m) { cell(r, m.kind); },
      function (r, m) { cell(r, m.breaker); },
      function (r, m) {
        cell(r, Object.keys(m.keys_by_state).map(function (k) { return k + ": " + m.keys_by_state[k]; }).join(", ") || "no keys");
      },
      function (r, m) { cell(r, m.healthy ? "healthy" : "trouble", m.healthy ? "ok" : "bad"); }
    ], "No customer key manager (HYOK) is configured.");
    table("job-rows", data.running_jobs, [
      function (r, j) { cell(r, j.key_name); }, function (r, j) { state(r, j.state); },
      function (r, j) {
        var td = cell(r, "");
        var bar = document.createElement("progress");
        bar.max = 100;
        bar.value = Math.round(j.progress * 100);
        td.appendChild(bar);
        td.appendChild(document.createTextNode(" " + j.done + " / " + j.total));
      },
      function (r, j) { cell(r, j.eta_seconds === null ? "—" : j.eta_seconds + " s"); }
    ], "No rewrap job is running.");
    table("event-rows", data.recent_events, [
      function (r, e) { cell(r, when(e.occurred_at)); }, function (r, e) { cell(r, e.action); },
      function (r, e) { cell(r, e.target); },
      function (r, e) { cell(r, e.outcome + (e.error_code ? " (" + e.error_code + ")" : ""), e.outcome === "success" ? "ok" : "bad"); },
      function (r, e) { cell(r, e.actor); }
    ], "No audit events yet.");
    $("generated").textContent = when(data.generated_at);
    root.setAttribute("data-loaded", "true");
  }

  function load() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) { $("error").textContent = ""; render(data); })
      .catch(function (error) { $("error").textContent = "Could not load the dashboard: " + error.message; })
      .then(function () { window.setTimeout(load, 30000); });
  }

  root.querySelectorAll("[data-window]").forEach(function (button) {
    button.addEventListener("click", function () {
      windowName = button.getAttribute("data-window");
      if (last) { drawOperations(last); }
    });
  });
  load();
})();
