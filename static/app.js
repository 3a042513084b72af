// Enhancements only: every page works without this file.
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

  // Kiosk: after a while without input, warn with a countdown, then wipe and start over.
  var body = document.body;
  if (!body.classList.contains("kiosk")) { return; }
  var idleMs = Number(body.dataset.idle) * 1000;
  var countdown = Number(body.dataset.countdown);
  var warning = document.getElementById("idle-warning");
  var secondsLeft = document.getElementById("idle-seconds");
  var idleTimer = null, tickTimer = null, left = 0;

  function wipe() {
    Array.prototype.forEach.call(document.forms, function (form) { form.reset(); });
    // replace(): no history entry leads back to the previous person's page.
    window.location.replace(body.dataset.start);
  }
  function tick() {
    left -= 1;
    if (secondsLeft) { secondsLeft.textContent = String(left); }
    if (left <= 0) { wipe(); return; }
    tickTimer = window.setTimeout(tick, 1000);
  }
  function warn() {
    left = countdown;
    if (secondsLeft) { secondsLeft.textContent = String(left); }
    warning.hidden = false;
    document.getElementById("idle-continue").focus();
    tickTimer = window.setTimeout(tick, 1000);
  }
  function active() {
    if (tickTimer) { window.clearTimeout(tickTimer); tickTimer = null; }
    if (warning && !warning.hidden) { warning.hidden = true; }
    window.clearTimeout(idleTimer);
    idleTimer = window.setTimeout(warn, idleMs);
  }
  ["keydown", "pointerdown", "input", "touchstart"].forEach(function (name) {
    document.addEventListener(name, active, { passive: true, capture: true });
  });
  document.getElementById("idle-continue").addEventListener("click", active);
  // The thank-you screen goes back to an empty form by itself (later if someone is using it;
  // a timed <meta> refresh could not be extended, which fails WCAG 2.2.1).
  var result = document.querySelector("[data-return-after]");
  if (result) {
    var back = null;
    var restart = function () {
      window.clearTimeout(back);
      back = window.setTimeout(function () { window.location.replace(body.dataset.start); },
                               Number(result.dataset.returnAfter) * 1000);
    };
    ["keydown", "pointerdown", "touchstart"].forEach(function (name) {
      document.addEventListener(name, restart, { passive: true, capture: true });
    });
    restart();
    return;
  }
  if (document.forms.length) { active(); }
})();
