/**
 * The Node side of the sh front-ends in bin/ (archive-push, archive-fetch), which answer a call
 * from walbridge's background work without starting Node (a Node start costs more than the whole
 * answer). Every safety rule stays with Node: the front-ends only compare what Node wrote.
 *
 * The call key: a front-end hashes the raw inputs its call's settings are resolved from (its
 * arguments but the WAL file names and paths, its environment, its config file's bytes) and
 * hands the key (two or three sha256 digests: the environment, the arguments, the config file)
 * to Node in WALBRIDGE_CALL_KEY. Node never computes it: a background process
 * keeps the key of the call that started it, and writes it in what it leaves for later calls.
 * Equal raw inputs resolve to equal settings, so a later call with the same key would have
 * reached the same repository and namespace. A call whose key differs (another configuration,
 * a call not made through a front-end) simply starts Node, which checks everything itself.
 */
import type { Settings } from '../config/settings.js';
import { statLine, type FileIdentity } from '../util/file-identity.js';

/** Set by the front-ends; only read by Node. */
export const CALL_KEY_ENV = 'WALBRIDGE_CALL_KEY';

/** The key a process was started with, if it was started through a front-end's call. */
export function callKeyOf(env: NodeJS.ProcessEnv): string | undefined {
  const key = env[CALL_KEY_ENV];
  return key && /^(?:[0-9a-f]{64}){2,3}$/.test(key) ? key : undefined;
}

/**
 * What a front-end compares, in one line: the key of the calls it may answer, and the identity
 * of the file as `stat -c '%d %i %s %.9Y %.9Z'` prints it.
 */
export function frontEndRecord(key: string, file: FileIdentity): string {
  return `${key} ${statLine(file)}`;
}

/**
 * Whether calls with these settings may be answered by bin/ alone: nothing of theirs needs Node
 * after the answer (no --metrics-file to add to) and its one log line, which bin/ writes as text,
 * is in the format asked for (no --log-format json).
 */
export function frontEndMayAnswer(settings: Pick<Settings, 'metricsFile' | 'logFormat'>): boolean {
  return !settings.metricsFile && settings.logFormat === 'text';
}
