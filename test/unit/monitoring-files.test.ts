/**
 * deploy/prometheus and deploy/grafana against what walbridge writes: every series they name is
 * one src/metrics writes (and the README documents), every PromQL expression parses (promtool), and
 * the dashboard is a Grafana dashboard that loads: its panels, queries, variables and layout.
 * Which alerts fire when is test/e2e/monitoring.test.ts's, over series real servers wrote.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { METRICS } from '../../src/metrics/textfile.js';
import { scratchDir } from '../support/scratch.js';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const rules = readFileSync(path.join(root, 'deploy/prometheus/walbridge.rules.yml'), 'utf8');
const dashboardText = readFileSync(path.join(root, 'deploy/grafana/walbridge.json'), 'utf8');
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');

/** Grafana's reference to the dashboard's datasource variable. */
const DATASOURCE = '$' + '{datasource}';

interface Target {
  refId: string;
  expr: string;
  datasource: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}
const dashboard = JSON.parse(dashboardText) as {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown }[] };
};
const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
/** A query as Prometheus gets it, the dashboard's variables filled in. */
const asSent = (expr: string) => expr.replaceAll('$namespace', '.*').replaceAll('$__rate_interval', '5m');
const metricNames = (text: string) => new Set(text.match(/\bwalbridge_[a-z_]+[a-z]\b/g) ?? []);

describe('deploy/prometheus and deploy/grafana', () => {
  it('name only series walbridge writes, and between them use every one; the README lists each', () => {
    const used = new Set([...metricNames(rules), ...metricNames(dashboardText)]);
    expect([...used].filter((name) => !(name in METRICS))).toEqual([]);
    expect(Object.keys(METRICS).filter((name) => !used.has(name))).toEqual([]);
    expect(Object.keys(METRICS).filter((name) => !readme.includes(`\`${name}`))).toEqual([]);
  });

  it('the dashboard: unique panel ids, a 24-column grid without overlaps, every query on the datasource variable, a namespace variable', () => {
    expect(dashboard.uid).toBe('walbridge');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x >= 0 && w > 0 && x + w <= 24 && h > 0, p.title).toBe(true);
      for (let i = x; i < x + w; i++)
        for (let j = y; j < y + h; j++) {
          expect(cells.has(`${i},${j}`), `${p.title} overlaps another panel`).toBe(false);
          cells.add(`${i},${j}`);
        }
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: DATASOURCE });
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets!) {
        expect(t.datasource.uid, p.title).toBe(DATASOURCE);
        expect(t.expr, p.title).toMatch(/namespace=~"\$namespace"/);
      }
    }
    expect(dashboard.templating.list.map((v) => [v.name, v.type])).toEqual([
      ['datasource', 'datasource'],
      ['namespace', 'query'],
    ]);
  });

  it('every expression parses: the rules (promtool check rules) and each dashboard query', async () => {
    const file = path.join(await scratchDir('wb-dashboard-'), 'queries.yml');
    const recorded = queries.map((expr, i) => ({ record: `walbridge_dashboard:query_${i}`, expr: asSent(expr) }));
    await writeFile(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: recorded }] }));
    for (const f of [path.join(root, 'deploy/prometheus/walbridge.rules.yml'), file]) {
      const r = await run('promtool', ['check', 'rules', f]).catch((err: { stdout: string; stderr: string }) => err);
      expect(r.stdout + r.stderr, f).toMatch(/SUCCESS/);
    }
    expect(queries.length).toBeGreaterThan(15);
  });
});
