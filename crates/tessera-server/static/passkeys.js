// Passkeys on tessera's own pages: add one (account page), log in with one (login page), or
// step up with one (step-up page). The pages load this file, from their own origin, only
// when passkeys are configured; everything else on them works without it. It calls the same
// API as any client (`/v1/passkeys/...`, `/v1/login/passkey...`, `/v1/step-up/passkey...`)
// with the session cookie, and leaves every decision to the server.
"use strict";

(() => {
  const supported =
    window.PublicKeyCredential &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function";
  if (!supported) {
    return; // the passkey controls stay hidden; the note saying why stays shown
  }
  for (const element of document.querySelectorAll("[data-passkey-area]")) {
    element.hidden = false;
  }
  for (const element of document.querySelectorAll("[data-passkey-unsupported]")) {
    element.hidden = true;
  }

  const errorBox = document.getElementById("passkey-error");
  function showError(text) {
    if (errorBox) {
      errorBox.textContent = text;
      errorBox.hidden = false;
    }
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      // an empty or non-JSON answer: only the status counts
    }
    return { ok: response.ok, status: response.status, data };
  }

  // A session whose sign-in is too old for the change: the step-up page, then back here.
  function stepUp(problem) {
    const query = new URLSearchParams({ rd: "/account?done=reauthenticated" });
    if (problem.aal) query.set("aal", String(problem.aal));
    query.set("max_age", String(problem.max_age ?? 0));
    window.location.assign("/login?" + query.toString());
  }

  // Where to go after signing in: the return address the server put on the button (it
  // checked it when it drew the page), else the account page.
  function returnTo(button) {
    return button.dataset.rd || "/account";
  }

  function failed(error, text) {
    if (error && error.name === "NotAllowedError") {
      showError("The passkey request was cancelled or timed out.");
    } else {
      showError(text);
    }
  }

  async function addPasskey(form) {
    const name = form.elements.name.value.trim();
    const begun = await post("/v1/passkeys/registration", {});
    if (begun.status === 401 && begun.data.code === "step_up_required") {
      stepUp(begun.data);
      return;
    }
    if (!begun.ok) {
      showError(begun.data.detail || "A passkey cannot be added right now.");
      return;
    }
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(begun.data.options.publicKey);
    const credential = await navigator.credentials.create({ publicKey });
    const done = await post("/v1/passkeys", {
      ceremony: begun.data.ceremony,
      name,
      credential: credential.toJSON(),
    });
    if (done.ok) {
      window.location.assign("/account?done=passkey_added");
    } else if (done.status === 401 && done.data.code === "step_up_required") {
      stepUp(done.data);
    } else {
      showError(done.data.detail || "The passkey was not added.");
    }
  }

  // Log-in and step-up: options from `begin`, the authenticator's answer to `finish` (with
  // `extra`: the username typed on the login page, which the passkey must then be).
  async function assert(button, begin, finish, refused, extra) {
    const begun = await post(begin, {});
    if (!begun.ok) {
      showError(begun.data.detail || refused);
      return;
    }
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begun.data.options.publicKey);
    const credential = await navigator.credentials.get({ publicKey });
    const done = await post(finish, {
      ...extra,
      ceremony: begun.data.ceremony,
      credential: credential.toJSON(),
    });
    if (done.ok) {
      window.location.assign(returnTo(button));
    } else if (done.status === 429) {
      showError("Too many attempts. Please wait a little and try again.");
    } else {
      showError(refused);
    }
  }

  const addForm = document.getElementById("passkey-add");
  if (addForm) {
    addForm.addEventListener("submit", (event) => {
      event.preventDefault();
      addPasskey(addForm).catch((error) => failed(error, "The passkey was not added."));
    });
  }

  const login = document.getElementById("passkey-login");
  if (login) {
    login.addEventListener("click", () => {
      const typed = document.getElementById("username");
      const username = typed ? typed.value.trim() : "";
      const named = username ? { username } : {};
      assert(login, "/v1/login/passkey/options", "/v1/login/passkey",
        "Log-in with that passkey failed.", named).catch((error) =>
        failed(error, "Log-in with that passkey failed."));
    });
  }

  const stepUpButton = document.getElementById("passkey-step-up");
  if (stepUpButton) {
    stepUpButton.addEventListener("click", () => {
      assert(stepUpButton, "/v1/step-up/passkey/options", "/v1/step-up/passkey",
        "That passkey was not accepted.").catch((error) =>
        failed(error, "That passkey was not accepted."));
    });
  }
})();
