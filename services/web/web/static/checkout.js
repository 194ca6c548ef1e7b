// The checkout page: tabs, card checks as you type, paying, and following the payment.
// No framework and no inline script (the Content-Security-Policy allows only this file).
"use strict";

(function () {
  const main = document.querySelector("main.checkout");
  if (!main || document.getElementById("expired")) return;
  const sessionId = main.dataset.session;
  const base = "/checkout/" + sessionId;
  const rules = JSON.parse(main.dataset.cardRules);
  const message = document.getElementById("message");
  const progress = document.getElementById("progress");
  let busy = false;

  // ---- tabs (WAI-ARIA tabs pattern: arrows move, Home/End jump) ----
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  function selectTab(tab) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
    showMessage("");
    if (tab.dataset.method === "CARD") loadEmiPlans();
  }
  tabs.forEach((tab, index) => {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      let next = null;
      if (event.key === "ArrowRight") next = tabs[(index + 1) % tabs.length];
      if (event.key === "ArrowLeft") next = tabs[(index - 1 + tabs.length) % tabs.length];
      if (event.key === "Home") next = tabs[0];
      if (event.key === "End") next = tabs[tabs.length - 1];
      if (next) {
        event.preventDefault();
        next.focus();
        selectTab(next);
      }
    });
  });

  function showMessage(text) {
    message.textContent = text;
  }
  function showProgress(text) {
    progress.textContent = text;
  }
  function setError(id, text) {
    const element = document.getElementById(id + "-error");
    const input = document.getElementById(id);
    if (element) element.textContent = text || "";
    if (input) input.setAttribute("aria-invalid", text ? "true" : "false");
    return !text;
  }

  // ---- card checks, from the same rules the server applies (gateway_core.cards) ----
  function digitsOf(text) {
    return text.replace(/\D/g, "");
  }
  function luhnValid(digits) {
    let sum = 0;
    for (let i = 0; i < digits.length; i++) {
      let d = Number(digits[digits.length - 1 - i]);
      if (i % 2 === 1) {
        d *= 2;
        if (d > 9) d -= 9;
      }
      sum += d;
    }
    return digits.length > 0 && sum % 10 === 0;
  }
  function brandOf(digits) {
    for (const [low, high, brand] of rules.iin) {
      const width = String(low).length;
      if (digits.length < width) continue;
      const head = Number(digits.slice(0, width));
      if (head >= low && head <= high) return brand;
    }
    return "";
  }
  const brandNames = { VISA: "Visa", MASTERCARD: "Mastercard", RUPAY: "RuPay", AMEX: "American Express", DINERS: "Diners Club" };
  function cardNumberProblem(digits, final) {
    const brand = brandOf(digits);
    if (!digits) return final ? "Enter the card number." : "";
    if (digits.length >= 2 && !brand) return "We accept Visa, Mastercard, RuPay, American Express and Diners Club.";
    const lengths = brand ? rules.lengths[brand] : [16];
    const longest = Math.max(...lengths);
    if (digits.length > longest) return "This card number is too long.";
    if (lengths.includes(digits.length)) {
      return luhnValid(digits) ? "" : "This card number is not valid: check the digits.";
    }
    return final ? "This card number is too short." : "";
  }
  function expiryProblem(text, final) {
    const match = /^(\d{2})\/(\d{2})$/.exec(text);
    if (!match) return final || text.length >= 5 ? "Enter the expiry as MM/YY." : "";
    const month = Number(match[1]);
    const year = 2000 + Number(match[2]);
    if (month < 1 || month > 12) return "The month must be 01 to 12.";
    const now = new Date();
    const thisMonth = now.getFullYear() * 12 + now.getMonth();
    if (year * 12 + month - 1 < thisMonth) return "This card has expired.";
    if (year > now.getFullYear() + 20) return "Check the expiry year.";
    return "";
  }
  function cvvProblem(text, brand, final) {
    const want = rules.cvv[brand] || 3;
    if (!/^\d*$/.test(text)) return "Digits only.";
    if (text.length === want) return "";
    return final || text.length > want ? "The CVV has " + want + " digits." : "";
  }

  const number = document.getElementById("card-number");
  const expiry = document.getElementById("card-expiry");
  const cvv = document.getElementById("card-cvv");
  if (number) {
    number.addEventListener("input", () => {
      const digits = digitsOf(number.value);
      const brand = brandOf(digits);
      const groups = brand === "AMEX" ? [4, 6, 5] : [4, 4, 4, 4, 3];
      let formatted = "";
      let at = 0;
      for (const size of groups) {
        if (at >= digits.length) break;
        formatted += (formatted ? " " : "") + digits.slice(at, at + size);
        at += size;
      }
      number.value = formatted;
      document.getElementById("card-brand").textContent = brand ? brandNames[brand] : "";
      number.dataset.brand = brand;
      setError("card-number", cardNumberProblem(digits, false));
    });
    expiry.addEventListener("input", () => {
      let digits = digitsOf(expiry.value).slice(0, 4);
      if (digits.length === 1 && Number(digits) > 1) digits = "0" + digits;
      expiry.value = digits.length > 2 ? digits.slice(0, 2) + "/" + digits.slice(2) : digits;
      setError("card-expiry", expiryProblem(expiry.value, false));
    });
    cvv.addEventListener("input", () => {
      setError("card-cvv", cvvProblem(cvv.value, number.dataset.brand || "", false));
    });
  }

  let emiLoaded = false;
  async function loadEmiPlans() {
    if (emiLoaded) return;
    emiLoaded = true;
    try {
      const reply = await fetch(base + "/emi-plans");
      if (!reply.ok) return;
      const { plans } = await reply.json();
      if (!plans.length) return;
      const select = document.getElementById("emi-plan");
      for (const plan of plans) {
        const option = document.createElement("option");
        option.value = plan.plan_id;
        option.textContent = plan.label;
        select.appendChild(option);
      }
      document.getElementById("emi").hidden = false;
    } catch (error) {
      emiLoaded = false;
    }
  }

  // ---- paying ----
  function attemptId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function detailsOf(form) {
    const method = form.dataset.method;
    if (method === "UPI") {
      const vpa = document.getElementById("vpa").value.trim();
      const ok = setError("vpa", /^[\w.\-]{2,256}@[A-Za-z][A-Za-z0-9]{1,63}$/.test(vpa) ? "" : "Enter your UPI ID, like name@bank.");
      return ok ? { method, vpa } : null;
    }
    if (method === "CARD") {
      const digits = digitsOf(number.value);
      const brand = brandOf(digits);
      const okNumber = setError("card-number", cardNumberProblem(digits, true));
      const okExpiry = setError("card-expiry", expiryProblem(expiry.value, true));
      const okCvv = setError("card-cvv", cvvProblem(cvv.value, brand, true));
      if (!(okNumber && okExpiry && okCvv)) return null;
      const [month, year] = expiry.value.split("/");
      return {
        method,
        card: {
          number: digits,
          expiry_month: month,
          expiry_year: "20" + year,
          cvv: cvv.value,
          holder_name: document.getElementById("card-name").value.trim(),
        },
        emi_plan_id: document.getElementById("emi-plan").value,
      };
    }
    if (method === "WALLET") {
      const phone = document.getElementById("wallet-phone").value.trim();
      const ok = setError("wallet-phone", /^[6-9]\d{9}$/.test(phone) ? "" : "Enter the 10-digit mobile number of your wallet.");
      const wallet = form.querySelector('input[name="wallet"]:checked').value;
      return ok ? { method, wallet, phone } : null;
    }
    return { method, bank_code: document.getElementById("bank").value };
  }

  function clearCard() {
    // Card data never stays in the page once sent.
    if (number) {
      number.value = "";
      cvv.value = "";
      expiry.value = "";
      document.getElementById("card-brand").textContent = "";
    }
  }

  const serverFields = {
    "payment_details.vpa": "vpa",
    "payment_details.card.card_number": "card-number",
    "payment_details.card.expiry_month": "card-expiry",
    "payment_details.card.expiry_year": "card-expiry",
    "payment_details.card.cvv": "card-cvv",
    "payment_details.phone": "wallet-phone",
  };

  for (const form of document.querySelectorAll("form.pay-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      showMessage("");
      const body = detailsOf(form);
      if (!body) return;
      body.attempt_id = attemptId();
      busy = true;
      form.querySelector("button[type=submit]").disabled = true;
      showProgress("Processing your payment…");
      let reply;
      try {
        reply = await fetch(base + "/pay", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
      } catch (error) {
        reply = null;
      } finally {
        if (body.method === "CARD") clearCard();
        busy = false;
        form.querySelector("button[type=submit]").disabled = false;
        showProgress("");
      }
      if (!reply) {
        showMessage("We could not reach the payment service. Check your connection and try again.");
        return;
      }
      const answer = await reply.json();
      if (!reply.ok) {
        let placed = false;
        for (const [field, text] of Object.entries(answer.fields || {})) {
          if (serverFields[field]) {
            setError(serverFields[field], text);
            placed = true;
          }
        }
        if (answer.reason === "SESSION_CLOSED") {
          window.location.reload();
          return;
        }
        showMessage(placed ? "Please correct the highlighted field." : answer.error);
        return;
      }
      follow(answer, form);
    });
  }

  function follow(payment, form) {
    if (payment.status === "SUCCESS" || payment.status === "AUTHORIZED") {
      paid();
    } else if (payment.status === "REQUIRES_ACTION" && payment.redirect_url) {
      showProgress("Taking you to your bank to confirm the payment…");
      window.location.assign(payment.redirect_url);
    } else if (payment.status === "FAILED" || payment.status === "EXPIRED" || payment.status === "CANCELLED") {
      failed(payment.message);
    } else if (payment.payment_url) {
      waitForUpi(payment, form);
    } else {
      poll();
    }
  }

  function failed(text) {
    showMessage(text || "The payment did not go through. Try again.");
    const waiting = document.getElementById("upi-waiting");
    if (waiting) waiting.hidden = true;
    const upiForm = document.getElementById("upi-form");
    if (upiForm) upiForm.hidden = false;
  }

  function paid() {
    showProgress("Payment received.");
    window.location.assign(base + "/receipt");
  }

  function waitForUpi(payment, form) {
    form.hidden = true;
    document.getElementById("upi-qr").src = payment.qr_code;
    document.getElementById("upi-link").href = payment.payment_url;
    document.getElementById("upi-waiting").hidden = false;
    const status = document.getElementById("upi-status");
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + base + "/stream");
    let done = false;
    socket.addEventListener("message", (event) => {
      const update = JSON.parse(event.data);
      if (update.status === "SUCCESS") {
        done = true;
        status.textContent = "Payment approved.";
        paid();
      } else if (update.status === "FAILED" || update.status === "EXPIRED" || update.status === "CANCELLED") {
        done = true;
        poll();
      } else {
        status.textContent = "Waiting for you to approve the payment in your UPI app… (" + update.status.toLowerCase() + ")";
      }
    });
    socket.addEventListener("close", () => {
      if (!done) poll();
    });
  }

  // After a redirect (3-D Secure, the bank), or when the live stream is gone: ask until the
  // payment has an outcome.
  async function poll() {
    showProgress("Checking your payment…");
    for (let i = 0; i < 120; i++) {
      let answer = null;
      try {
        const reply = await fetch(base + "/status");
        if (reply.ok) answer = await reply.json();
      } catch (error) {
        answer = null;
      }
      if (answer) {
        if (answer.session_status === "COMPLETE") return paid();
        if (answer.session_status === "EXPIRED") return window.location.reload();
        const payment = answer.payment;
        if (payment && ["FAILED", "EXPIRED", "CANCELLED"].includes(payment.status)) {
          showProgress("");
          return failed(payment.message);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    showProgress("");
    showMessage("We are still waiting to hear about your payment. Refresh this page in a moment.");
  }

  if (main.dataset.returning) {
    // Back from 3-D Secure or the bank: show the card (or bank) tab and follow the payment.
    const url = new URL(window.location.href);
    const tab = url.searchParams.has("three_ds_transaction_id")
      ? document.getElementById("tab-card")
      : document.getElementById("tab-net_banking");
    if (tab) selectTab(tab);
    history.replaceState(null, "", base);
    poll();
  }
})();
