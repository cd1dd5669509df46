/** What a namespace may be: one path segment of every key under it (archive/repo/layout.ts), and what the Terraform modules accept. */
const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Returns a reason the namespace is unusable, or undefined if it is fine. */
export function namespaceProblem(namespace: string): string | undefined {
  if (!NAMESPACE.test(namespace) || namespace.includes('..')) {
    return `namespace ${JSON.stringify(namespace)} must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`;
  }
  return undefined;
}
