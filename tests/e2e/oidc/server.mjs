// A real OpenID Connect provider for KCM's single sign-on browser test: panva's oidc-provider
// (certified by the OpenID Foundation) with its development sign-in pages, one confidential
// client (KCM) and a few people. Started by tests/e2e/test_sso_browser.py:
//   PORT=... REDIRECT_URI=... CLIENT_ID=... CLIENT_SECRET=... node server.mjs
import Provider from "oidc-provider";

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;

// Who may sign in (the login typed on the provider's page; any password is accepted).
const people = {
  alice: { email: "alice@example.com", email_verified: true, groups: ["kcm-keys"] },
  carol: { email: "carol@example.com", email_verified: true, groups: ["kcm-admins", "staff"] },
  mallory: { email: "mallory@evil.example", email_verified: true, groups: ["kcm-keys"] },
  nobody: { email: "nobody@example.com", email_verified: true, groups: ["staff"] },
};

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      client_secret: process.env.CLIENT_SECRET,
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  pkce: { required: () => true },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["groups"] },
  // Put the scopes' claims in the ID token itself (KCM reads no userinfo).
  conformIdTokenClaims: false,
  cookies: { keys: ["kcm-e2e-cookie-key-not-a-secret"] },
  async findAccount(ctx, id) {
    const person = people[id];
    if (!person) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...person }; } };
  },
});

provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
