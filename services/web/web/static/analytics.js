// The dashboard's charts (uPlot, served from /static/vendor): volume and success rate over time
// by method, refreshed every 15 seconds.
"use strict";

(function () {
  const section = document.getElementById("analytics");
  if (!section || typeof uPlot === "undefined") return;
  const status = document.getElementById("analytics-status");
  const colours = { UPI: "#0b5cad", CARD: "#b3261e", WALLET: "#146c2e", NET_BANKING: "#7a4b00" };
  const rupees = new Intl.NumberFormat("en-IN", { style: "currency", currency: "INR" });
  let charts = null;

  function options(title, element, methods, yValue, yRange) {
    return {
      title: title,
      width: Math.max(300, element.clientWidth || 600),
      height: 260,
      scales: yRange ? { x: { time: true }, y: { range: yRange } } : { x: { time: true } },
      series: [{}].concat(methods.map((m) => ({
        label: m,
        stroke: colours[m] || "#333",
        width: 2,
        points: { show: true },
        value: (u, v) => (v == null ? "–" : yValue(v)),
      }))),
      axes: [{}, { size: 90, values: (u, values) => values.map(yValue) }],
    };
  }

  function columns(data, key, scale) {
    return [data.times].concat(data.methods.map((m) => data[key][m].map((v) => (v == null ? null : v * scale))));
  }

  function table(data) {
    const body = document.querySelector("#analytics-totals tbody");
    body.replaceChildren();
    for (const method of data.methods) {
      const t = data.totals[method];
      const row = document.createElement("tr");
      for (const [text, numeric] of [
        [method, false],
        [String(t.payment_count), true],
        [String(t.success_count), true],
        [(t.success_rate * 100).toFixed(1) + "%", true],
        [rupees.format(t.processed_amount_paisa / 100), true],
      ]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (numeric) cell.className = "num";
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
  }

  async function refresh() {
    let data;
    try {
      const reply = await fetch("/dashboard/analytics.json?range=" + encodeURIComponent(section.dataset.range));
      data = await reply.json();
      if (!reply.ok) throw new Error(data.error || "analytics unavailable");
    } catch (error) {
      status.textContent = "Could not load analytics: " + error.message;
      return;
    }
    const volume = columns(data, "volume_paisa", 0.01);
    const rate = columns(data, "success_rate", 100);
    const signature = data.methods.join(",");
    if (!charts || charts.signature !== signature) {
      for (const old of charts ? charts.plots : []) old.destroy();
      const volumeElement = document.getElementById("volume-chart");
      const rateElement = document.getElementById("rate-chart");
      charts = {
        signature: signature,
        plots: [
          new uPlot(options("Volume", volumeElement, data.methods, (v) => rupees.format(v)), volume, volumeElement),
          new uPlot(options("Success rate", rateElement, data.methods, (v) => v.toFixed(0) + "%", [0, 100]), rate, rateElement),
        ],
      };
    } else {
      charts.plots[0].setData(volume);
      charts.plots[1].setData(rate);
    }
    table(data);
    status.textContent = data.methods.length
      ? "Updated " + new Date().toLocaleTimeString("en-IN") + " (refreshes every 15 seconds)."
      : "No payments in this period yet.";
  }

  refresh();
  setInterval(refresh, 15000);
})();
