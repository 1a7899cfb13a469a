// Live progress of an audit export: poll its JSON with the console's session.
(function () {
  "use strict";
  var card = document.getElementById("export");
  if (!card) return;
  function poll() {
    fetch(card.getAttribute("data-poll-url"), {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (job) {
        document.getElementById("progress").value = job.progress;
        document.getElementById("status").textContent = job.state + (job.total ? " — " + job.done + " / " + job.total + " events" : "");
        if (job.state === "succeeded") { document.getElementById("links").hidden = false; return; }
        if (job.state === "failed") {
          document.getElementById("status").textContent = "failed (" + job.error_code + "): " + job.error;
          return;
        }
        setTimeout(poll, 500);
      });
  }
  poll();
})();
