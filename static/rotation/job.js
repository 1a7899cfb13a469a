// Live progress of a rotation job: poll its JSON (the API, with the console's session) and
// update the bar until the job stops running. No dependencies; nothing loads from elsewhere.
(function () {
  "use strict";
  var card = document.getElementById("job");
  if (!card) { return; }
  var url = card.getAttribute("data-poll-url");
  var active = { queued: true, running: true };
  var delay = 1000;

  function text(id, value) {
    var node = card.querySelector('[data-testid="' + id + '"]');
    if (node) { node.textContent = value; }
  }

  function render(job) {
    var percent = Math.round((job.progress || 0) * 100);
    var bar = card.querySelector('[data-testid="job-progress"]');
    bar.setAttribute("aria-valuenow", String(percent));
    bar.firstElementChild.style.width = percent + "%";
    text("job-percent", percent + "%");
    text("job-done", job.done);
    text("job-total", job.total);
    text("job-failed", job.failed);
    text("job-rate", job.rate);
    text("job-eta", job.eta_seconds === null ? "—" : job.eta_seconds + " s");
    text("job-error", job.error ? job.error.code + ": " + job.error.detail : "");
    text("job-report", job.report ? JSON.stringify(job.report) : "");
    var state = card.querySelector('[data-testid="job-state"]');
    state.textContent = job.state;
    state.className = "state state-" + job.state;
    card.setAttribute("data-state", job.state);
    card.querySelectorAll("form[data-when]").forEach(function (form) {
      form.hidden = form.getAttribute("data-when").split(" ").indexOf(job.state) < 0;
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (job) {
        render(job);
        delay = 1000;
        if (active[job.state]) { window.setTimeout(poll, delay); }
      })
      .catch(function () {
        delay = Math.min(delay * 2, 15000);  // back off while the server is unreachable
        window.setTimeout(poll, delay);
      });
  }

  if (active[card.getAttribute("data-state")]) { window.setTimeout(poll, 500); }
})();
