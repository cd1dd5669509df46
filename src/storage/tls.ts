/**
 * A server certificate that is not trusted is a configuration problem, not a network blip:
 * retrying it for --timeout would only delay the one-line answer. walbridge never turns
 * certificate checks off; the fix is to name the CA.
 */
const CERT_ERRORS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** What is wrong with the server's certificate, if that is what `err` (or its causes) says. */
export function untrustedCertificate(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown; message?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && CERT_ERRORS.has(e.code)) {
      return `the server's TLS certificate is not trusted (${e.code}): give its CA certificate in NODE_EXTRA_CA_CERTS (walbridge never turns certificate checks off)`;
    }
  }
  return undefined;
}
