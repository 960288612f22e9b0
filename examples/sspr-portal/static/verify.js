// The call page's one script: it follows the verification's status (the
// portal relays verifyd's WatchVerification as server-sent events) and
// moves on by itself once the call is answered. Without it, the page's
// "I've answered the call" button does the same check.
"use strict";

(function () {
  var events = new EventSource("/verify/events");
  events.addEventListener("status", function (event) {
    if (event.data === "pending") {
      return;
    }
    events.close();
    if (event.data === "approved") {
      // The server checks again with verifyd before it finishes the step.
      window.location.assign("/verify/complete");
    } else {
      // Denied, expired, canceled…: the page shows how it ended.
      window.location.replace("/verify");
    }
  });
})();
