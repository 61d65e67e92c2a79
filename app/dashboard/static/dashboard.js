// Corral dashboard: progressive enhancement only. Every page is complete without this file;
// with it, charts are drawn from the data tables the page already holds, the overview's key
// figures refresh every 10 s from /dashboard/live/overview, and each time's tooltip also says
// when it was in the viewer's own timezone.
(function () {
  "use strict";

  var REFRESH_MS = 10000;
  var COLORS = { line: "#0b5cad", limit: "#a4161a", bar: "rgba(11, 92, 173, 0.75)" };
  var configuredZone = document.documentElement.dataset.timezone || "UTC";

  // "2026-03-01 13:00:00 CET", as the server writes an instant (app/dashboard/formatting.py).
  function stamp(date, zone, withZone) {
    var parts = {};
    new Intl.DateTimeFormat("en-GB", {
      timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
    }).formatToParts(date).forEach(function (part) { parts[part.type] = part.value; });
    var text = parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" +
      parts.minute + ":" + parts.second;
    return withZone ? text + " " + parts.timeZoneName : text;
  }

  function rowsOf(table) {
    return Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-x]"));
  }

  // uPlot's data: [xs, series1, series2, ...] from the rows' data-x and data-y attributes.
  function dataOf(table, count) {
    var rows = rowsOf(table);
    var data = [rows.map(function (r) { return Number(r.dataset.x); })];
    for (var i = 0; i < count; i++) {
      data.push(rows.map(function (r) { return Number(r.dataset.y.split(",")[i]); }));
    }
    return { data: data, labels: rows.map(function (r) { return r.dataset.label || ""; }) };
  }

  function chartOptions(figure, table, names, labels, width) {
    var kind = figure.dataset.chart;
    var timeAxis = figure.dataset.xKind === "time";
    var bars = figure.dataset.bars === "true" && uPlot.paths && uPlot.paths.bars;
    var series = [{}];
    names.forEach(function (name, i) {
      var s = { label: name, stroke: i === 0 ? COLORS.line : COLORS.limit, width: 2 };
      if (kind === "concurrency" && i === 0 && uPlot.paths.stepped) {
        // A bucket's peak holds for the whole bucket.
        s.paths = uPlot.paths.stepped({ align: 1 });
        s.fill = "rgba(11, 92, 173, 0.12)";
      }
      if (kind === "concurrency" && i === 1) { s.dash = [6, 4]; }
      if (bars && i === 0) {
        s.paths = uPlot.paths.bars({ size: [0.7, 60] });
        s.fill = COLORS.bar;
        s.points = { show: false };
      }
      series.push(s);
    });
    var options = {
      width: width,
      height: 260,
      series: series,
      scales: { x: { time: timeAxis }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      axes: [{}, {}],
      legend: { show: true },
    };
    if (timeAxis) {
      options.tzDate = function (ts) { return uPlot.tzDate(new Date(ts * 1000), configuredZone); };
      // The whole window or month, however few points fall in it.
      if (figure.dataset.xMin && figure.dataset.xMax) {
        var lo = Number(figure.dataset.xMin), hi = Number(figure.dataset.xMax);
        options.scales.x.range = function () { return [lo, hi]; };
      }
    } else {
      options.axes[0] = {
        values: function (u, splits) {
          return splits.map(function (i) { return Number.isInteger(i) ? (labels[i] || "") : ""; });
        },
      };
      options.scales.x.range = function () { return [-0.5, Math.max(labels.length - 0.5, 0.5)]; };
    }
    return options;
  }

  function drawCharts() {
    if (typeof window.uPlot === "undefined") { return; }
    document.querySelectorAll("figure.chart[data-chart]").forEach(function (figure) {
      var table = document.getElementById(figure.dataset.table);
      var canvas = figure.querySelector(".chart-canvas");
      if (!table || !canvas || rowsOf(table).length === 0) { return; }
      var names = JSON.parse(table.dataset.series || '["Value"]');
      var parsed = dataOf(table, names.length);
      canvas.classList.add("drawn");
      var width = Math.max(canvas.clientWidth, 280);
      var plot = new uPlot(chartOptions(figure, table, names, parsed.labels, width), parsed.data, canvas);
      var resize = function () { plot.setSize({ width: Math.max(canvas.clientWidth, 280), height: 260 }); };
      if (window.ResizeObserver) { new ResizeObserver(resize).observe(figure); }
      else { window.addEventListener("resize", resize); }
    });
  }

  function setFigure(name, figure) {
    document.querySelectorAll('[data-figure="' + name + '"]').forEach(function (el) {
      var changed = el.dataset.value !== figure.value;
      el.dataset.value = figure.value;
      var text = el.querySelector(".figure-text");
      if (text) { text.textContent = figure.text; }
      var usd = el.querySelector(".figure-usd");
      if (usd && figure.usd) { usd.textContent = figure.usd; }
      el.classList.toggle("updated", changed);
    });
  }

  function liveRefresh() {
    var main = document.querySelector("main[data-live]");
    if (!main || !window.fetch) { return; }
    var url = main.dataset.live;
    var status = document.querySelector(".live-status");
    var at = document.querySelector("[data-live-at]");
    var timer = null;
    function tick() {
      if (document.hidden) { return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (response.status === 401) {
            window.clearInterval(timer);
            if (status) { status.textContent = "Signed out: reload the page to sign in again."; }
            return null;
          }
          return response.ok ? response.json() : null;
        })
        .then(function (body) {
          if (!body) { return; }
          Object.keys(body.figures).forEach(function (name) { setFigure(name, body.figures[name]); });
          var time = at && at.querySelector("time");
          if (time) {
            var when = new Date(body.at);
            time.setAttribute("datetime", when.toISOString());
            time.title = stamp(when, "UTC") + " UTC";
            time.textContent = stamp(when, configuredZone, true);
          }
          if (status) { status.textContent = "(live, refreshed every 10 s)"; }
        })
        .catch(function () {
          if (status) { status.textContent = "(live refresh paused: Corral did not answer)"; }
        });
    }
    timer = window.setInterval(tick, REFRESH_MS);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { tick(); } });
  }

  // Times are written in the accounting timezone; a viewer elsewhere also sees their own.
  function localTimes() {
    var own;
    try { own = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
    if (!own || own === configuredZone) { return; }
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) { return; }
      el.title = el.title + " · your time: " + stamp(when, own, true);
    });
  }

  function start() {
    drawCharts();
    liveRefresh();
    localTimes();
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
})();
