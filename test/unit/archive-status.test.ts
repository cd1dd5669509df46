import { describe, expect, it } from 'vitest';
import { archiverOrder } from '../../src/wal/archive-status.js';

describe('archiverOrder', () => {
  it('puts timeline history files first, then the rest by name, as pgarch.c does', () => {
    expect(
      archiverOrder([
        '000000020000000000000004',
        '000000010000000000000003.partial',
        '00000002.history',
        '000000010000000000000002',
        '000000010000000000000002.00000028.backup',
      ]),
    ).toEqual([
      '00000002.history',
      '000000010000000000000002',
      '000000010000000000000002.00000028.backup',
      '000000010000000000000003.partial',
      '000000020000000000000004',
    ]);
  });
});
