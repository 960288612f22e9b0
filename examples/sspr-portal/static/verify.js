// The call page's one script: it follows the verification's status (the
// portal relays verifyd's WatchVerification as server-sent events) and
// moves on by itself once the call is answered. Without it, the page's
// "I've answered the call" button does the same check.
"use strict";

(function () {
  // How long to wait before trying again when the portal answered without
  // a stream (503 when too many are open; 204 when nothing is left to
  // follow): reloading /verify asks the page where things stand.
  var RETRY_MS = 10000;
  var events = new EventSource("/verify/events");
  events.addEventListener("status", function (event) {
    if (event.data === "pending") {
      return;
    }
    events.close();
    var button = document.getElementById("continue");
    if (event.data === "approved" && button && button.form) {
      // Finishing the step changes state, so it is the page's own POST
      // form, CSRF token and all: the same request as the button's. The
      // server asks verifyd again before it finishes the step.
      button.form.submit();
    } else {
      // Denied, expired, canceled…: the page shows how it ended.
      window.location.replace("/verify");
    }
  });
  // This session opened a newer stream (another tab, say): that one
  // follows the call now; here the button still works.
  events.addEventListener("replaced", function () {
    events.close();
  });
  events.addEventListener("error", function () {
    if (events.readyState === EventSource.CLOSED) {
      window.setTimeout(function () {
        window.location.replace("/verify");
      }, RETRY_MS);
    }
  });
})();
