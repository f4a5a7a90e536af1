/* gcl-eval leaderboard: sortable columns (rank, model, metrics), row filters, baseline switch, CSV export.
   Plain JavaScript, no libraries, no network: the page works when opened from the file system.
   The relative changes and significance marks of every baseline were computed by the build and
   sit in each table's <script class="variants"> JSON; switching the baseline only swaps them in. */
(function () {
  "use strict";

  var variantCache = new Map();

  function variantsOf(section) {
    if (!variantCache.has(section)) {
      variantCache.set(section, JSON.parse(section.querySelector("script.variants").textContent));
    }
    return variantCache.get(section);
  }

  // ------------------------------------------------------------------ sorting

  function sortValue(row, index, type) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-sort-value") ? cell.getAttribute("data-sort-value") : cell.textContent.trim();
    if (raw === "") return null;
    if (type === "num" || type === "rank") {
      var n = parseFloat(raw);
      return isNaN(n) ? null : n;
    }
    return raw;
  }

  function sortBy(header) {
    var table = header.closest("table");
    var index = Number(header.dataset.index);
    var type = header.dataset.type;
    var previous = header.getAttribute("aria-sort");
    // metrics start best-first (descending), ranks 1 first, text A-Z; a second click reverses
    var direction = previous ? (previous === "descending" ? "ascending" : "descending")
                             : (type === "num" ? "descending" : "ascending");
    table.querySelectorAll("th[aria-sort]").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction);
    var sign = direction === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a, index, type);
      var y = sortValue(b, index, type);
      if (x === null || y === null) return (x === null) - (y === null);  // missing values last
      if (type !== "text") return sign * (x - y);
      return sign * x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" });
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  // ------------------------------------------------------------------ filters

  function applyFilters() {
    var wanted = {};
    document.querySelectorAll("#filters select[data-facet]").forEach(function (select) {
      wanted[select.dataset.facet] = select.value;
    });
    var shown = 0;
    var total = 0;
    document.querySelectorAll("section.board").forEach(function (section) {
      var visible = 0;
      section.querySelectorAll("tbody tr").forEach(function (row) {
        var keep = Object.keys(wanted).every(function (facet) {
          return !wanted[facet] || row.dataset[facet] === wanted[facet];
        });
        row.hidden = !keep;
        total += 1;
        if (keep) visible += 1;
      });
      section.hidden = visible === 0;
      shown += visible;
    });
    document.getElementById("shown").textContent = shown + " of " + total + " models shown";
    document.getElementById("nothing-shown").hidden = shown > 0;
  }

  // ------------------------------------------------------------------ baseline

  function applyBaseline(select) {
    var section = document.getElementById(select.dataset.table);
    var base = select.value;
    var cells = base ? variantsOf(section)[base] : null;
    section.querySelectorAll("tbody tr").forEach(function (row) {
      row.classList.toggle("is-baseline", row.dataset.slug === base);
      var rowCells = cells ? cells[row.dataset.slug] : null;
      row.querySelectorAll("td.metric").forEach(function (td, i) {
        var cell = rowCells ? rowCells[i] : ["", "", ""];
        var span = td.querySelector(".rel");
        span.textContent = cell[0];
        span.className = "rel " + cell[1];
        if (cell[2]) span.title = cell[2]; else span.removeAttribute("title");
      });
    });
  }

  // ------------------------------------------------------------------ CSV

  function csvField(value) {
    var text = value === null || value === undefined ? "" : String(value);
    // a text cell starting like a formula would run in a spreadsheet: quote it as text
    if (/^[=+\-@\t\r]/.test(text) && isNaN(Number(text))) text = "'" + text;
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  /* The rows currently shown (filters applied, in their current order) as CSV text. */
  function leaderboardCsv() {
    var keys = [];
    var records = [];
    document.querySelectorAll("section.board").forEach(function (section) {
      if (section.hidden) return;
      var select = section.querySelector("select.baseline");
      var base = select.value;
      var baseLabel = base ? select.selectedOptions[0].dataset.label : "";
      var cells = base ? variantsOf(section)[base] : null;
      section.querySelectorAll("tbody tr").forEach(function (row) {
        if (row.hidden) return;
        var record = {
          fixed: [section.dataset.dataset, section.dataset.track, row.cells[0].dataset.sortValue,
                  row.cells[1].dataset.sortValue, row.querySelector(".path").title, row.dataset.seeds,
                  row.dataset.family, row.dataset.training, baseLabel],
          metrics: {}
        };
        row.querySelectorAll("td.metric").forEach(function (td, i) {
          var key = td.dataset.key;
          if (keys.indexOf(key) < 0) keys.push(key);
          var cell = cells ? cells[row.dataset.slug][i] : null;
          record.metrics[key] = [td.dataset.sortValue, td.dataset.std, cell ? cell[3] : null, cell ? cell[4] : null];
        });
        records.push(record);
      });
    });
    var header = ["dataset", "track", "rank", "model", "model folder", "seeds", "family", "training", "baseline"];
    keys.forEach(function (key) { header.push(key, key + " std", key + " change %", key + " p (Holm)"); });
    var lines = [header.map(csvField).join(",")];
    records.forEach(function (record) {
      var fields = record.fixed.slice();
      keys.forEach(function (key) {
        var m = record.metrics[key] || ["", "", null, null];
        fields.push(m[0], m[1], m[2], m[3]);
      });
      lines.push(fields.map(csvField).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  function downloadCsv() {
    var blob = new Blob([leaderboardCsv()], { type: "text/csv;charset=utf-8" });
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = "leaderboard.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  // ------------------------------------------------------------------ wiring

  document.querySelectorAll("th.sortable").forEach(function (header) {
    header.tabIndex = 0;
    header.addEventListener("click", function () { sortBy(header); });
    header.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        sortBy(header);
      }
    });
  });
  var filters = document.getElementById("filters");
  filters.addEventListener("change", applyFilters);
  filters.addEventListener("submit", function (event) { event.preventDefault(); });
  filters.addEventListener("reset", function () { setTimeout(applyFilters, 0); });
  document.querySelectorAll("select.baseline").forEach(function (select) {
    select.addEventListener("change", function () { applyBaseline(select); });
  });
  document.getElementById("download-csv").addEventListener("click", downloadCsv);
  window.leaderboardCsv = leaderboardCsv;
  applyFilters();
})();
