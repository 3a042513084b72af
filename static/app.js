// Enhancements only: the form works without this file.
(function () {
  "use strict";
  // Move focus to the error summary (or a result heading) so it is read out first.
  var target = document.getElementById("error-summary") || document.getElementById("result-heading");
  if (target) { target.focus(); }
  // One submission at a time: disable the button while the request is in flight.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.sending) { event.preventDefault(); return; }
    form.dataset.sending = "1";
    var button = form.querySelector("button[type=submit]");
    if (button) {
      button.disabled = true;
      if (button.dataset.busyText) { button.textContent = button.dataset.busyText; }
    }
  });
  // A page restored from the back-forward cache must not show a previous person's entry.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });
})();
