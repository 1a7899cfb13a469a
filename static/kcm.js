// Behaviour the console's markup asks for with data attributes, so that the
// Content-Security-Policy needs no inline scripts or styles.
(function () {
  "use strict";
  // <form data-confirm="..."> asks before it submits.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) {
      event.preventDefault();
    }
  });
  // <div data-width="42%"> gets that width (a style attribute would need 'unsafe-inline').
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-width]").forEach(function (element) {
      element.style.width = element.getAttribute("data-width");
    });
  });
})();
