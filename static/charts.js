// KCM charts: a small, dependency-free SVG chart module (line, bars, horizontal gauges).
// Written for the console's CSP (script-src 'self', no inline styles): it builds SVG
// elements with presentation attributes only, never a style attribute or inline script.
// Every data point is a <circle class="point"> or <rect class="bar"> carrying
// data-series/data-index/data-value, with a <title> tooltip, so tests and screen readers see
// the numbers drawn.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#2952cc", "#067647", "#b54708", "#7a5af8", "#c11574", "#0e9384", "#475467"];
  var W = 720, H = 220, PAD = { top: 14, right: 12, bottom: 28, left: 44 };

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, String(attrs[key])); });
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function tooltip(node, text) { el("title", {}, node).textContent = text; }

  function svgIn(container, label, height) {
    container.textContent = "";
    var svg = el("svg", {
      viewBox: "0 0 " + W + " " + (height || H), role: "img", "aria-label": label,
      class: "chart", preserveAspectRatio: "xMidYMid meet"
    }, container);
    return svg;
  }

  // A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten.
  function niceMax(value) {
    if (value <= 0) { return 1; }
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= value) { return steps[i] * power; }
    }
    return 10 * power;
  }

  function axes(svg, labels, max, height) {
    var bottom = height - PAD.bottom, plotW = W - PAD.left - PAD.right;
    for (var i = 0; i <= 4; i++) {
      var y = bottom - (bottom - PAD.top) * i / 4;
      el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, stroke: "#e4e7ec" }, svg);
      el("text", { x: PAD.left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#667085" }, svg)
        .textContent = String(Math.round(max * i / 4 * 100) / 100);
    }
    var every = Math.max(1, Math.ceil(labels.length / 8));
    labels.forEach(function (label, index) {
      if (index % every !== 0 && index !== labels.length - 1) { return; }
      var x = PAD.left + plotW * (labels.length === 1 ? 0.5 : index / (labels.length - 1));
      var anchor = index === 0 ? "start" : (index === labels.length - 1 ? "end" : "middle");
      el("text", { x: x, y: height - 8, "text-anchor": anchor, "font-size": 11, fill: "#667085" }, svg)
        .textContent = label;
    });
  }

  function legend(container, series) {
    var list = document.createElement("ul");
    list.className = "legend";
    series.forEach(function (s, i) {
      var item = document.createElement("li");
      var swatch = el("svg", { width: 12, height: 12, "aria-hidden": "true" }, item);
      el("rect", { width: 12, height: 12, rx: 2, fill: s.color || PALETTE[i % PALETTE.length] }, swatch);
      item.appendChild(document.createTextNode(" " + s.name));
      list.appendChild(item);
    });
    container.appendChild(list);
  }

  function maxOf(series) {
    var max = 0;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v > max) { max = v; } }); });
    return niceMax(max);
  }

  // line(container, {labels: [...], series: [{name, values: [...]}], label})
  function line(container, spec) {
    var svg = svgIn(container, spec.label, H), max = maxOf(spec.series);
    var bottom = H - PAD.bottom, plotW = W - PAD.left - PAD.right, n = spec.labels.length;
    axes(svg, spec.labels, max, H);
    spec.series.forEach(function (s, si) {
      var color = s.color || PALETTE[si % PALETTE.length];
      var points = s.values.map(function (v, i) {
        var x = PAD.left + plotW * (n === 1 ? 0.5 : i / (n - 1));
        return [x, bottom - (bottom - PAD.top) * v / max, v];
      });
      el("polyline", {
        points: points.map(function (p) { return p[0].toFixed(1) + "," + p[1].toFixed(1); }).join(" "),
        fill: "none", stroke: color, "stroke-width": 2, class: "series", "data-series": s.name
      }, svg);
      points.forEach(function (p, i) {
        var dot = el("circle", {
          cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: p[2] > 0 ? 3 : 1.5, fill: color,
          class: "point", "data-series": s.name, "data-index": i, "data-value": p[2]
        }, svg);
        tooltip(dot, s.name + " · " + spec.labels[i] + ": " + p[2]);
      });
    });
    legend(container, spec.series);
  }

  // bars(container, {labels, series: [{name, values, color}], label}): grouped columns.
  function bars(container, spec) {
    var svg = svgIn(container, spec.label, H), max = maxOf(spec.series);
    var bottom = H - PAD.bottom, plotW = W - PAD.left - PAD.right, n = spec.labels.length;
    axes(svg, spec.labels, max, H);
    var slot = plotW / Math.max(n, 1), width = Math.max(1, slot * 0.8 / spec.series.length);
    spec.series.forEach(function (s, si) {
      var color = s.color || PALETTE[si % PALETTE.length];
      s.values.forEach(function (v, i) {
        var center = PAD.left + plotW * (n === 1 ? 0.5 : i / (n - 1));
        var h = (bottom - PAD.top) * v / max;
        var bar = el("rect", {
          x: (center - slot * 0.4 + si * width).toFixed(1), y: (bottom - h).toFixed(1),
          width: width.toFixed(1), height: h.toFixed(1), fill: color,
          class: "bar", "data-series": s.name, "data-index": i, "data-value": v
        }, svg);
        tooltip(bar, s.name + " · " + spec.labels[i] + ": " + v);
      });
    });
    legend(container, spec.series);
  }

  // gauges(container, {rows: [{label, value, max, mark, title}], label}): horizontal bars of
  // value/max with an optional vertical mark (e.g. the usage at which rotation is forced).
  function gauges(container, spec) {
    var rowH = 26, height = Math.max(1, spec.rows.length) * rowH + 6;
    var svg = svgIn(container, spec.label, height), left = 200, right = W - 70;
    spec.rows.forEach(function (row, i) {
      var y = 4 + i * rowH, fraction = Math.min(1, row.max > 0 ? row.value / row.max : 0);
      var color = row.mark && row.value >= row.mark ? "#b42318" : "#2952cc";
      el("text", { x: left - 8, y: y + 15, "text-anchor": "end", "font-size": 12, fill: "#1d2330" }, svg)
        .textContent = row.label;
      el("rect", { x: left, y: y + 3, width: right - left, height: 16, rx: 3, fill: "#f2f4f7" }, svg);
      var bar = el("rect", {
        x: left, y: y + 3, width: Math.max(fraction > 0 ? 1 : 0, (right - left) * fraction).toFixed(1),
        height: 16, rx: 3, fill: color, class: "bar gauge", "data-series": row.label,
        "data-index": i, "data-value": row.value
      }, svg);
      tooltip(bar, row.title || row.label + ": " + row.value + " of " + row.max);
      if (row.mark) {
        var mx = left + (right - left) * Math.min(1, row.mark / row.max);
        el("line", { x1: mx, x2: mx, y1: y, y2: y + 22, stroke: "#b54708", "stroke-width": 2 }, svg);
      }
      el("text", { x: right + 6, y: y + 15, "font-size": 12, fill: "#667085" }, svg)
        .textContent = (fraction * 100).toFixed(fraction < 0.01 ? 4 : 1) + "%";
    });
  }

  window.KcmCharts = { line: line, bars: bars, gauges: gauges, niceMax: niceMax };
})();
