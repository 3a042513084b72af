// Enhancements only: every page works without this file.
(function () {
  "use strict";
  // Move focus to the error summary (or a result heading) so it is read out first.
  var target = document.getElementById("error-summary") || document.getElementById("result-heading");
  if (target) { target.focus(); }

  // One submission at a time: disable the button while the request is in flight. (A language
  // button sends the form too, to keep what was typed: it says nothing about sending.)
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.sending) { event.preventDefault(); return; }
    form.dataset.sending = "1";
    var button = form.querySelector(".actions button[type=submit]");
    if (button && !(event.submitter && event.submitter.name === "lang")) {
      button.disabled = true;
      if (button.dataset.busyText) { button.textContent = button.dataset.busyText; }
    }
  });

  // The member number: one tap copies it (Clipboard API where the page may use it); where it
  // may not, the number is selected for the cashier to copy.
  Array.prototype.forEach.call(document.querySelectorAll("[data-copy]"), function (button) {
    var target = document.getElementById(button.dataset.copy);
    if (!target) { return; }
    button.hidden = false;
    var label = button.textContent;
    function select() {
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    function said(text) {
      button.textContent = text;
      window.setTimeout(function () { button.textContent = label; }, 2500);
    }
    button.addEventListener("click", function () {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(target.textContent.trim()).then(
          function () { said(button.dataset.copied); },
          function () { select(); said(button.dataset.selected); });
      } else {
        select();
        said(button.dataset.selected);
      }
    });
  });

  // A Nordic postcode is digits: the keypad for it, the full keyboard for other countries.
  var country = document.getElementById("countryCode");
  var postcode = document.getElementById("zipCode");
  if (country && postcode && postcode.dataset.numericIn) {
    country.addEventListener("change", function () {
      var numeric = postcode.dataset.numericIn.split(" ").indexOf(country.value) >= 0;
      postcode.setAttribute("inputmode", numeric ? "numeric" : "text");
    });
  }

  // A customer display at rest asks a cheap status answer every second and reloads when the
  // till hands it the form (or pairs it); without JavaScript the page refreshes itself.
  var rest = document.querySelector("[data-display-status]");
  if (rest) {
    var pollRest = function () {
      fetch(rest.dataset.displayStatus, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (answer.status !== rest.dataset.now) { window.location.reload(); return; }
          window.setTimeout(pollRest, Number(rest.dataset.poll) * 1000);
        })
        .catch(function () { window.setTimeout(pollRest, 5000); });
    };
    window.setTimeout(pollRest, Number(rest.dataset.poll) * 1000);
  }

  // A staff tablet looks the person up as the cashier leaves the key field: once its value
  // looks valid, after a short pause (a look-up per field left, never per key pressed), and
  // the answer replaces the [data-lookup] beside it. "Look up" does the same without a reload.
  var lookupRow = document.querySelector("[data-lookup-url]");
  var keyField = lookupRow && document.getElementById(lookupRow.dataset.lookupKey);
  if (lookupRow && keyField) {
    var form = keyField.form, sent = "", asked = 0, pause = null;
    var looksValid = function (value) {
      var key = lookupRow.dataset.lookupKey;
      if (key === "email") { return /^[^@\s]+@[^@\s]+\.[^@\s]{2,}$/.test(value); }
      if (key === "mobilePhone") { return value.replace(/\D/g, "").length >= 7; }
      if (key === "socialSecurityNumber") { return value.replace(/\D/g, "").length >= 10; }
      return value.length >= 2;
    };
    var touched = {};
    form.addEventListener("change", function (event) {
      if (event.target.type === "checkbox") { touched[event.target.name] = true; }
    });
    var place = function (html) {
      var old = document.getElementById("lookup");
      if (!old) { return; }
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var fresh = holder.querySelector("[data-lookup]");
      if (!fresh) { return; }
      old.parentNode.replaceChild(fresh, old);
      // What the person has given is ticked, so that unticking one withdraws it; never a box
      // the cashier has touched already.
      (fresh.dataset.given || "").split(" ").forEach(function (name) {
        if (!name) { return; }
        var box = form.elements[name] || form.elements["consent-" + name];
        if (box && box.type === "checkbox" && !touched[box.name]) { box.checked = true; }
      });
    };
    var lookUp = function (force, wallet) {
      var value = keyField.value.trim();
      if (!looksValid(value) || (value === sent && !force)) { return; }
      sent = value;
      var mine = ++asked;
      var body = new FormData();
      body.append("csrf_token", form.elements.csrf_token.value);
      body.append(keyField.name, keyField.value);
      if (wallet) { body.append("lookup", "wallet"); }
      fetch(lookupRow.dataset.lookupUrl, { method: "POST", body: body, credentials: "same-origin" })
        .then(function (response) { return response.status === 200 ? response.text() : ""; })
        .then(function (html) { if (mine === asked && html) { place(html); } })
        .catch(function () { sent = ""; });
    };
    keyField.addEventListener("change", function () {
      window.clearTimeout(pause);
      pause = window.setTimeout(lookUp, 250);
    });
    keyField.addEventListener("blur", function () {
      window.clearTimeout(pause);
      pause = window.setTimeout(lookUp, 250);
    });
    // "Show the card for the phone's wallet" in a member's answer: the same look-up (remembered,
    // so not asked of Engage again), with the card.
    document.addEventListener("click", function (event) {
      var wallet = event.target.closest && event.target.closest("[data-lookup-wallet]");
      if (!wallet) { return; }
      event.preventDefault();
      window.clearTimeout(pause);
      lookUp(true, true);
    });
    var button = lookupRow.querySelector("button[name=lookup]");
    if (button) {
      // Leaving the field looks the person up: the button is for a page without script.
      button.hidden = true;
      button.addEventListener("click", function (event) {
        event.preventDefault();
        window.clearTimeout(pause);
        lookUp(true);
      });
    }
  }

  // Staff: "Next customer" next to a filled form asks for a second tap, so a stray tap never
  // wipes what the cashier typed.
  var clear = document.querySelector(".clear-form");
  if (clear) {
    var label = clear.textContent, armed = null;
    clear.addEventListener("click", function (event) {
      var form = document.getElementById("signup");
      var filled = form && Array.prototype.some.call(form.elements, function (el) {
        return (el.type === "checkbox" && el.checked) ||
          ((el.type === "text" || el.type === "email" || el.type === "tel") && el.value);
      });
      if (!filled || armed) { return; }
      event.preventDefault();
      clear.textContent = clear.dataset.confirm;
      armed = window.setTimeout(function () { clear.textContent = label; armed = null; }, 4000);
    });
  }

  // Scan to join: a waiting till asks for its handoff's status now and then (a cheap answer),
  // and shows the outcome as soon as there is one. Without JavaScript the page refreshes.
  var handoff = document.querySelector("[data-status-url]");
  if (handoff && handoff.dataset.status !== "closed" && handoff.dataset.status !== "done") {
    var poll = function () {
      var request = new XMLHttpRequest();
      request.open("GET", handoff.dataset.statusUrl);
      request.onload = function () {
        var now = request.status === 200 ? JSON.parse(request.responseText).status : null;
        if (now && now !== handoff.dataset.status) { window.location.reload(); return; }
        window.setTimeout(poll, Number(handoff.dataset.poll) * 1000);
      };
      request.onerror = function () { window.setTimeout(poll, Number(handoff.dataset.poll) * 1000); };
      request.send();
    };
    window.setTimeout(poll, Number(handoff.dataset.poll) * 1000);
  }

  // The customer's phone: a minute before its code runs out, say so (what was typed is kept).
  var expiry = document.querySelector("[data-expiry-warning]");
  if (expiry) {
    var left = Number(expiry.dataset.secondsLeft);
    if (left >= 0) {
      window.setTimeout(function () { expiry.hidden = false; }, Math.max(0, left - 60) * 1000);
    }
  }

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
  var secondsText = document.getElementById("idle-text");
  var idleTimer = null, tickTimer = null, left = 0;
  function showSeconds() {  // the sentence for one, or for more, as the page gave them
    if (!secondsText) { return; }
    var sentence = left === 1 ? secondsText.dataset.one : secondsText.dataset.other;
    secondsText.textContent = sentence.replace("{n}", String(left));
  }

  function wipe() {
    Array.prototype.forEach.call(document.forms, function (form) { form.reset(); });
    // replace(): no history entry leads back to the previous person's page.
    window.location.replace(body.dataset.start);
  }
  function tick() {
    left -= 1;
    showSeconds();
    if (left <= 0) { wipe(); return; }
    tickTimer = window.setTimeout(tick, 1000);
  }
  function warn() {
    left = countdown;
    showSeconds();
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
    document.addEventListener(name, function (event) {
      // A tap on the warning's own buttons is theirs to answer (Continue, or Start over).
      if (warning && !warning.hidden && warning.contains(event.target)) { return; }
      active();
    }, { passive: true, capture: true });
  });
  document.getElementById("idle-continue").addEventListener("click", active);
  document.getElementById("idle-start-over").addEventListener("click", function (event) {
    event.preventDefault();
    wipe();
  });
  // The thank-you screen goes back to an empty form by itself (later if someone is using it;
  // a timed <meta> refresh could not be extended, which fails WCAG 2.2.1).
  var result = document.querySelector("[data-return-after]");
  if (result) {
    var back = null, remaining = 0;
    var note = document.getElementById("return-note");
    var say = function () {  // the seconds left, in the sentence for one or for more
      if (!note) { return; }
      var sentence = remaining === 1 ? note.dataset.one : note.dataset.other;
      note.textContent = sentence.replace("{n}", String(remaining));
    };
    var step = function () {
      remaining -= 1;
      if (remaining <= 0) { window.location.replace(body.dataset.start); return; }
      say();
      back = window.setTimeout(step, 1000);
    };
    var restart = function () {
      window.clearTimeout(back);
      remaining = Number(result.dataset.returnAfter);
      say();
      back = window.setTimeout(step, 1000);
    };
    ["keydown", "pointerdown", "touchstart"].forEach(function (name) {
      document.addEventListener(name, restart, { passive: true, capture: true });
    });
    restart();
    return;
  }
  if (document.forms.length) { active(); }
})();
