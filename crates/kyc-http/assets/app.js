// The back office's one script: small conveniences on top of pages that work without it.
// - Copy buttons (`data-copy="<input id>"`) copy an input's value to the clipboard.
// - Forms marked `data-once` disable their buttons once submitted (the server also replays a
//   repeated Start Verification instead of charging twice).
// - Forms with `data-confirm="question"` ask before they submit.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var input = document.getElementById(button.getAttribute("data-copy"));
      var status = document.querySelector('[data-copied-for="' + input.id + '"]');
      var done = function (text) { if (status) { status.textContent = text; } };
      input.select();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(
          function () { done("Copied."); },
          function () { done("Press Ctrl+C (or ⌘C) to copy the selected text."); });
      } else {
        done("Press Ctrl+C (or ⌘C) to copy the selected text.");
      }
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    form.addEventListener("submit", function () {
      window.setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  });
});
