// The receipt: after a few seconds, back to the merchant (the link works without waiting).
"use strict";

(function () {
  const link = document.getElementById("return-link");
  if (link) setTimeout(() => window.location.assign(link.href), 4000);
})();
