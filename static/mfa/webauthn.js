// Passkey ceremonies for the MFA pages (no inline script: the CSP forbids it).
// <form id="passkey-register|passkey-auth" data-options-url data-finish-url> asks the server
// for options, runs navigator.credentials.create/get, and posts the result back as JSON.
(function () {
  "use strict";

  function csrf(form) {
    var input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function post(form, url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(form) },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          throw new Error(data.detail || "The server refused the passkey.");
        }
        return data;
      });
    });
  }

  function showError(form, error) {
    var box = form.querySelector("[data-testid=passkey-error]");
    if (box) {
      box.textContent = error && error.message ? error.message : String(error);
      box.hidden = false;
    }
  }

  function run(form, register) {
    var options = form.getAttribute("data-options-url");
    var finish = form.getAttribute("data-finish-url");
    post(form, options)
      .then(function (json) {
        if (register) {
          var createOptions = PublicKeyCredential.parseCreationOptionsFromJSON(json);
          return navigator.credentials.create({ publicKey: createOptions });
        }
        var getOptions = PublicKeyCredential.parseRequestOptionsFromJSON(json);
        return navigator.credentials.get({ publicKey: getOptions });
      })
      .then(function (credential) {
        var nameInput = form.querySelector("input[name=name]");
        return post(form, finish, {
          credential: credential.toJSON(),
          name: nameInput ? nameInput.value : "",
        });
      })
      .then(function (data) {
        window.location.assign(data.redirect);
      })
      .catch(function (error) {
        showError(form, error);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    [["passkey-register", true], ["passkey-auth", false]].forEach(function (pair) {
      var form = document.getElementById(pair[0]);
      if (form) {
        form.addEventListener("submit", function (event) {
          event.preventDefault();
          run(form, pair[1]);
        });
      }
    });
  });
})();
