import { describe, expect, it } from 'vitest';
import { shellWords } from '../../src/util/shell-words.js';

describe('shellWords (archive_command and restore_command as sh splits them)', () => {
  it('splits on blanks and takes quotes and backslashes as sh does', () => {
    expect(shellWords('archive-push %p')).toEqual(['archive-push', '%p']);
    expect(shellWords("  /usr/local/bin/archive-fetch --config '/etc/wal bridge.conf' %f %p %r ")).toEqual([
      '/usr/local/bin/archive-fetch',
      '--config',
      '/etc/wal bridge.conf',
      '%f',
      '%p',
      '%r',
    ]);
    expect(shellWords('a "b \\"c\\" d" e\\ f x\'y\'z')).toEqual(['a', 'b "c" d', 'e f', 'xyz']);
    expect(shellWords('WALBRIDGE_NAMESPACE=db1 archive-push %p')).toEqual(['WALBRIDGE_NAMESPACE=db1', 'archive-push', '%p']);
    expect(shellWords('')).toEqual([]);
  });

  it('gives up on what only running it would tell, and on what sh would refuse', () => {
    for (const line of [
      'archive-push $HOME %p',
      'archive-push %p; true',
      'a | b',
      'a && b',
      'a > f',
      '"unclosed',
      "'unclosed",
      'a `b`',
      'a "$X"',
      'trailing\\',
    ])
      expect(shellWords(line), line).toBeUndefined();
  });
});
