// P3AK console: WebAuthn ceremonies and the undo countdowns. No other script runs here.
'use strict';

(function () {
  const meta = document.querySelector('meta[name="csrf"]');
  const csrf = meta ? meta.content : '';

  function fromB64url(text) {
    const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    const bin = atob(padded);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  function toB64url(buffer) {
    if (!buffer) return null;
    const bytes = new Uint8Array(buffer);
    let bin = '';
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function say(text) {
    const p = document.getElementById('js-message');
    if (!p) return;
    p.textContent = text;
    p.hidden = false;
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
      body: JSON.stringify(body),
    });
    let answer;
    try {
      answer = await response.json();
    } catch (e) {
      answer = { error: 'the console answered ' + response.status };
    }
    if (!response.ok) {
      const error = new Error(answer.error || 'the console answered ' + response.status);
      error.fromServer = true;
      throw error;
    }
    return answer;
  }

  function creationOptions(challenge) {
    const pk = Object.assign({}, challenge.publicKey);
    pk.challenge = fromB64url(pk.challenge);
    pk.user = Object.assign({}, pk.user, { id: fromB64url(pk.user.id) });
    if (pk.excludeCredentials) {
      pk.excludeCredentials = pk.excludeCredentials.map(function (c) {
        return Object.assign({}, c, { id: fromB64url(c.id) });
      });
    }
    return { publicKey: pk };
  }

  function requestOptions(challenge) {
    const pk = Object.assign({}, challenge.publicKey);
    pk.challenge = fromB64url(pk.challenge);
    if (pk.allowCredentials) {
      pk.allowCredentials = pk.allowCredentials.map(function (c) {
        return Object.assign({}, c, { id: fromB64url(c.id) });
      });
    }
    return { publicKey: pk };
  }

  async function register(button) {
    const name = (document.getElementById('key-name') || {}).value || '';
    const pinInput = document.getElementById('key-pin');
    const pin = pinInput ? pinInput.value : null;
    const challenge = await post('/webauthn/register/start', { name: name, pin: pin });
    const cred = await navigator.credentials.create(creationOptions(challenge));
    const response = cred.response;
    await post('/webauthn/register/finish', {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64url(response.attestationObject),
        clientDataJSON: toB64url(response.clientDataJSON),
        transports: response.getTransports ? response.getTransports() : undefined,
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
    });
  }

  async function approve(button) {
    const box = button.closest('.webauthn-approve');
    const id = box.dataset.id;
    const binding = box.dataset.binding;
    const pinInput = box.querySelector('input.webauthn-pin');
    const pin = pinInput ? pinInput.value : null;
    const challenge = await post('/webauthn/approve/start', { id: id, binding: binding });
    const cred = await navigator.credentials.get(requestOptions(challenge));
    const response = cred.response;
    await post('/webauthn/approve/finish', {
      id: id,
      pin: pin,
      credential: {
        id: cred.id,
        rawId: toB64url(cred.rawId),
        type: cred.type,
        response: {
          authenticatorData: toB64url(response.authenticatorData),
          clientDataJSON: toB64url(response.clientDataJSON),
          signature: toB64url(response.signature),
          userHandle: toB64url(response.userHandle),
        },
        extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      },
    });
  }

  document.addEventListener('click', function (event) {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    event.preventDefault();
    if (!window.PublicKeyCredential) {
      say('This browser has no WebAuthn (or the console is not reached as localhost or over https).');
      return;
    }
    const run = button.dataset.action === 'register' ? register : approve;
    button.disabled = true;
    run(button).then(
      function () { window.location.reload(); },
      function (error) {
        button.disabled = false;
        // The console keeps its own errors for the page; the browser's are shown here.
        if (error.fromServer) window.location.reload();
        else say('The security key step did not finish: ' + error.message);
      }
    );
  });

  // Undo windows: tick the server-rendered countdowns; reload when one runs out.
  const loaded = Date.now();
  const countdowns = Array.prototype.slice.call(document.querySelectorAll('.countdown'));
  function show(ms) {
    const s = Math.max(0, Math.ceil(ms / 1000));
    const m = Math.floor(s / 60);
    return m > 0 ? m + ' min ' + (s % 60) + ' s' : s + ' s';
  }
  if (countdowns.length > 0) {
    let reloading = false;
    setInterval(function () {
      const passed = Date.now() - loaded;
      countdowns.forEach(function (el) {
        const left = Number(el.dataset.remainingMs) - passed;
        el.textContent = left > 0 ? show(left) : 'now';
        if (left <= -1000 && !reloading) {
          reloading = true;
          window.location.reload();
        }
      });
    }, 250);
  }
})();
