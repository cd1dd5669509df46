/**
 * The Terraform modules and examples under terraform/, checked without Terraform (it cannot be
 * installed here). Every file is parsed with @cdktf/hcl2json; a small evaluator of the HCL
 * expression language (below) then renders what matters for sample inputs (key prefixes, lifecycle
 * rules, IAM policies and bindings, validations, outputs) and the results are compared with
 * walbridge's own code: layout.ts for the keys, the S3 driver for the requests it sends,
 * parseRepoUrl and namespaceProblem for what is a valid prefix or namespace. The modules and the
 * tool cannot drift apart unnoticed.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getExpressionAst, parse } from '@cdktf/hcl2json';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  checkPrefix,
  historyPrefix,
  identityKey,
  namespacePrefix,
  namespaceProblem,
  streamPrefix,
  triggerKey,
  triggerPrefix,
  walFileKey,
  walPrefix,
} from '../../src/archive/repo/layout.js';
import { chunkKey, listChunks } from '../../src/archive/repo/stream-chunks.js';
import { formatRepo, parseRepoUrl } from '../../src/storage/registry.js';
import { SETTINGS } from '../../src/config/settings.js';
import { SINGLE_REQUEST_LIMIT } from '../../src/storage/body.js';
import { PART_BYTES, S3Store } from '../../src/storage/s3.js';
import { joinKey, type Store } from '../../src/storage/store.js';
import { parseWalFileName } from '../../src/wal/names.js';

const TERRAFORM = fileURLToPath(new URL('../../terraform/', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Loading: every .tf file of a directory, merged as Terraform merges a module's files.
// ---------------------------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };
type Value = unknown;
type Scope = Readonly<Record<string, Value>>;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (!isObject(v)) throw new Error(`${what} is not an object: ${JSON.stringify(v)}`);
  return v;
}

function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) throw new Error(`${what} is not a list: ${JSON.stringify(v)}`);
  return v;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string') throw new Error(`${what} is not a string: ${JSON.stringify(v)}`);
  return v;
}

/** A block body: `"name": [body]` for a block that may appear once. */
function only(v: unknown, what: string): JsonObject {
  const list = arr(v, what);
  if (list.length !== 1) throw new Error(`${what}: expected one block, found ${list.length}`);
  return obj(list[0], what) as JsonObject;
}

function tfFiles(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith('.tf') || f.endsWith('.tfvars.example'))
    .map((f) => path.join(dir, f))
    .sort();
}

const parsed = new Map<string, JsonObject>();
for (const file of tfFiles(TERRAFORM)) {
  try {
    parsed.set(file, (await parse(file, readFileSync(file, 'utf8'))) as JsonObject);
  } catch {
    // Reported by the "parses" test below; the other tests then fail on what is missing.
  }
}

class Module {
  readonly variables: Record<string, JsonObject> = {};
  readonly locals: Record<string, Json> = {};
  readonly resources: Record<string, JsonObject> = {};
  readonly data: Record<string, JsonObject> = {};
  readonly outputs: Record<string, JsonObject> = {};
  readonly calls: Record<string, JsonObject> = {};
  readonly terraform: JsonObject[] = [];
  readonly providers: Record<string, JsonObject> = {};
  readonly files: Record<string, JsonObject> = {};

  constructor(readonly dir: string) {
    const files = readdirSync(dir).filter((f) => f.endsWith('.tf'));
    if (files.length === 0) throw new Error(`no .tf files in ${dir}`);
    for (const f of files) {
      const json = parsed.get(path.join(dir, f));
      if (!json) throw new Error(`${dir}/${f} did not parse`);
      this.files[f] = json;
      for (const [name, blocks] of Object.entries(obj(json['variable'] ?? {}, 'variable'))) this.variables[name] = only(blocks, `variable ${name}`);
      for (const block of arr(json['locals'] ?? [], 'locals')) Object.assign(this.locals, obj(block, 'locals'));
      for (const [kind, target] of [
        ['resource', this.resources],
        ['data', this.data],
      ] as const) {
        for (const [type, byName] of Object.entries(obj(json[kind] ?? {}, kind))) {
          for (const [name, blocks] of Object.entries(obj(byName, `${kind} ${type}`))) target[`${type}.${name}`] = only(blocks, `${kind} ${type}.${name}`);
        }
      }
      for (const [name, blocks] of Object.entries(obj(json['output'] ?? {}, 'output'))) this.outputs[name] = only(blocks, `output ${name}`);
      for (const [name, blocks] of Object.entries(obj(json['module'] ?? {}, 'module'))) this.calls[name] = only(blocks, `module ${name}`);
      for (const [name, blocks] of Object.entries(obj(json['provider'] ?? {}, 'provider'))) this.providers[name] = only(blocks, `provider ${name}`);
      for (const block of arr(json['terraform'] ?? [], 'terraform')) this.terraform.push(obj(block, 'terraform') as JsonObject);
    }
  }

  /** Every string of every file that holds an expression. */
  expressions(): string[] {
    const out: string[] = [];
    const walk = (v: unknown): void => {
      if (typeof v === 'string' && v.includes('${')) out.push(v);
      else if (Array.isArray(v)) v.forEach(walk);
      else if (isObject(v)) Object.values(v).forEach(walk);
    };
    walk(Object.values(this.files));
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluating: a subset of HCL's expression language and of Terraform's functions, enough for the
// expressions of these modules. Like Terraform, && and || evaluate both sides (no short circuit)
// and a conditional evaluates only the branch it picks.
// ---------------------------------------------------------------------------------------------

interface AstNode {
  readonly type: string;
  readonly children: readonly AstNode[];
  readonly meta?: {
    readonly value?: string;
    readonly type?: string;
    readonly name?: string;
    readonly expandedFinalArgument?: boolean;
    readonly operator?: string;
    readonly traversal?: readonly { readonly type: string; readonly segment: string }[];
    readonly items?: Readonly<Record<string, string>>;
    readonly keyVar?: string;
    readonly valVar?: string;
    readonly collectionExpression?: string;
    readonly keyExpression?: string;
    readonly valueExpression?: string;
    readonly conditionalExpression?: string;
    readonly groupedValue?: boolean;
    readonly openRangeValue?: string;
  };
}

/** Something this evaluator does not do; unlike an error Terraform would raise, can() and try() do not catch it. */
class NotSimulated extends Error {}

const astCache = new Map<string, Promise<AstNode>>();
function ast(source: string): Promise<AstNode> {
  let cached = astCache.get(source);
  if (!cached) {
    cached = getExpressionAst('expression.tf', source).then((node) => {
      if (!node) throw new Error(`cannot parse expression ${source}`);
      return node as unknown as AstNode;
    });
    astCache.set(source, cached);
  }
  return cached;
}

/** The index just past the `}` that closes the `${` at `start`, skipping nested strings and braces. */
function interpolationEnd(s: string, start: number): number {
  let depth = 0;
  for (let i = start + 2; i < s.length; i++) {
    const c = s[i];
    if (c === '"') {
      for (i++; i < s.length && s[i] !== '"'; i++) {
        if (s[i] === '\\') i++;
        else if (s[i] === '$' && s[i + 1] === '{') i = interpolationEnd(s, i) - 1;
      }
    } else if (c === '{') depth++;
    else if (c === '}') {
      if (depth === 0) return i + 1;
      depth--;
    }
  }
  throw new Error(`unterminated interpolation in ${s}`);
}

/** HCL source for a string as hcl2json renders it: `${expr}` alone, or a quoted template. */
function expressionSource(s: string): string {
  if (s.startsWith('${') && interpolationEnd(s, 0) === s.length) return s.slice(2, -1);
  let out = '"';
  for (let i = 0; i < s.length; ) {
    if (s.startsWith('${', i)) {
      const end = interpolationEnd(s, i);
      out += s.slice(i, end);
      i = end;
    } else {
      const c = s[i]!;
      out += c === '"' || c === '\\' ? `\\${c}` : c === '\n' ? '\\n' : c;
      i++;
    }
  }
  return `${out}"`;
}

/** A template's literal text as HCL reads it (the AST keeps the escapes of the source). */
function unescapeLiteral(s: string): string {
  return s.replace(/\\(["\\nrt])|\$\$\{|%%\{/g, (m, c: string | undefined) => {
    if (m === '$${') return '${';
    if (m === '%%{') return '%{';
    return ({ '"': '"', '\\': '\\', n: '\n', r: '\r', t: '\t' } as Record<string, string>)[c!]!;
  });
}

function typeName(v: Value): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'list';
  return typeof v === 'object' ? 'object' : typeof v;
}

function num(v: Value, what: string): number {
  if (typeof v !== 'number') throw new Error(`${what}: a number is required, got ${typeName(v)}`);
  return v;
}

function bool(v: Value, what: string): boolean {
  if (typeof v !== 'boolean') throw new Error(`${what}: a bool is required, got ${typeName(v)}`);
  return v;
}

function canonical(v: Value): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isObject(v))
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v ?? null);
}

/** Collection entries as Terraform iterates them: lists by index, maps and objects by sorted key. */
function entries(v: Value, what: string): [Value, Value][] {
  if (Array.isArray(v)) return v.map((x, i) => [i, x]);
  if (isObject(v))
    return Object.keys(v)
      .sort()
      .map((k) => [k, v[k]]);
  throw new Error(`${what}: cannot iterate over ${typeName(v)}`);
}

function tfString(v: Value, what: string): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new Error(`${what}: a string is required, got ${typeName(v)}`);
}

function format(spec: string, args: Value[]): string {
  let i = 0;
  return spec.replace(/%([sqd%])/g, (_m, verb: string) => {
    if (verb === '%') return '%';
    const arg = args[i++];
    if (verb === 'q') return JSON.stringify(tfString(arg, 'format %q'));
    if (verb === 'd') return String(num(arg, 'format %d'));
    return tfString(arg, 'format %s');
  });
}

const FUNCTIONS: Record<string, (args: Value[]) => Value> = {
  alltrue: ([l]) => arr(l, 'alltrue').every((x) => bool(x, 'alltrue')),
  anytrue: ([l]) => arr(l, 'anytrue').some((x) => bool(x, 'anytrue')),
  coalesce: (args) => {
    const found = args.find((x) => x !== null && x !== undefined && x !== '');
    if (found === undefined) throw new Error('coalesce: no non-null argument');
    return found;
  },
  concat: (args) => args.flatMap((l) => arr(l, 'concat')),
  contains: ([l, x]) => arr(l, 'contains').some((y) => canonical(y) === canonical(x)),
  flatten: ([l]) => arr(l, 'flatten').flat(Infinity),
  floor: ([x]) => Math.floor(num(x, 'floor')),
  format: ([spec, ...args]) => format(str(spec, 'format'), args),
  join: ([sep, l]) =>
    arr(l, 'join')
      .map((x) => tfString(x, 'join'))
      .join(str(sep, 'join')),
  jsondecode: ([s]) => JSON.parse(str(s, 'jsondecode')) as Value,
  jsonencode: ([x]) => JSON.stringify(x),
  keys: ([m]) => Object.keys(obj(m, 'keys')).sort(),
  length: ([x]) => {
    if (typeof x === 'string') return [...x].length;
    if (Array.isArray(x)) return x.length;
    return Object.keys(obj(x, 'length')).length;
  },
  lower: ([s]) => str(s, 'lower').toLowerCase(),
  merge: (args) => Object.assign({}, ...args.filter((a) => a !== null).map((a) => obj(a, 'merge'))),
  range: ([a, b]) => Array.from({ length: Math.max(0, num(b, 'range') - num(a, 'range')) }, (_x, i) => num(a, 'range') + i),
  regex: ([pattern, s]) => {
    const m = new RegExp(str(pattern, 'regex pattern')).exec(str(s, 'regex'));
    if (!m) throw new Error(`regex: ${JSON.stringify(s)} does not match ${pattern}`);
    return m.length > 1 ? m.slice(1) : m[0];
  },
  sort: ([l]) =>
    arr(l, 'sort')
      .map((x) => str(x, 'sort'))
      .sort(),
  split: ([sep, s]) => str(s, 'split').split(str(sep, 'split')),
  startswith: ([s, p]) => str(s, 'startswith').startsWith(str(p, 'startswith')),
  strcontains: ([s, p]) => str(s, 'strcontains').includes(str(p, 'strcontains')),
  substr: ([s, off, len]) => [...str(s, 'substr')].slice(num(off, 'substr'), num(off, 'substr') + num(len, 'substr')).join(''),
  toset: ([l]) => [...new Map(arr(l, 'toset').map((x) => [canonical(x), x])).values()].sort((a, b) => canonical(a).localeCompare(canonical(b))),
  values: ([m]) => entries(obj(m, 'values'), 'values').map(([, v]) => v),
};

/** A resource or data source as tests see it: attributes by name, or instances by key. */
type Stubs = Readonly<Record<string, Value>>;

class Evaluator {
  private readonly localCache = new Map<string, Promise<Value>>();

  constructor(
    readonly mod: Module,
    readonly vars: Readonly<Record<string, Value>>,
    private readonly stubs: Stubs = {},
  ) {}

  /** Evaluates a value as hcl2json gives it: expressions in strings, lists, objects. */
  async json(v: Json | undefined, scope: Scope = {}): Promise<Value> {
    if (typeof v === 'string') return v.includes('${') ? this.expr(expressionSource(v), scope) : v;
    if (Array.isArray(v)) {
      const out: Value[] = [];
      for (const x of v) out.push(await this.json(x, scope));
      return out;
    }
    if (isObject(v)) {
      const out: Record<string, Value> = {};
      for (const [k, x] of Object.entries(v)) out[k] = await this.json(x, scope);
      return out;
    }
    return v ?? null;
  }

  async expr(source: string, scope: Scope = {}): Promise<Value> {
    return this.node(await ast(source), scope);
  }

  local(name: string): Promise<Value> {
    let cached = this.localCache.get(name);
    if (!cached) {
      if (!(name in this.mod.locals)) throw new Error(`local.${name} is not declared`);
      cached = this.json(this.mod.locals[name], {});
      this.localCache.set(name, cached);
    }
    return cached;
  }

  /**
   * A block body with its nested blocks, dynamic blocks expanded, meta-arguments left out:
   * attributes by name, nested blocks as lists of bodies.
   */
  async body(body: JsonObject, scope: Scope = {}): Promise<Record<string, Value>> {
    const out: Record<string, Value> = {};
    const blocks = (type: string): Value[] => (out[type] ??= []) as Value[];
    for (const [key, v] of Object.entries(body)) {
      if (['for_each', 'count', 'depends_on', 'lifecycle', 'provider', 'providers', 'source'].includes(key)) continue;
      if (key === 'dynamic') {
        for (const [type, dynamics] of Object.entries(obj(v, 'dynamic'))) {
          for (const dynamic of arr(dynamics, `dynamic ${type}`)) {
            const d = obj(dynamic, `dynamic ${type}`) as JsonObject;
            const iterator = d['iterator'] === undefined ? type : str(d['iterator'], 'iterator').replace(/^\$\{(.*)\}$/, '$1');
            const content = only(d['content'], `dynamic ${type} content`);
            for (const [k, value] of entries(await this.json(d['for_each'], scope), `dynamic ${type} for_each`)) {
              blocks(type).push(await this.body(content, { ...scope, [iterator]: { key: k, value } }));
            }
          }
        }
      } else if (Array.isArray(v) && v.length > 0 && v.every(isObject)) {
        for (const nested of v) blocks(key).push(await this.body(nested as JsonObject, scope));
      } else {
        out[key] = await this.json(v, scope);
      }
    }
    return out;
  }

  /** The instances of a resource or data source: by each.key for for_each, by index for count. */
  async instances(address: string, kind: 'resource' | 'data' = 'resource'): Promise<Map<Value, Record<string, Value>>> {
    const block = (kind === 'resource' ? this.mod.resources : this.mod.data)[address];
    if (!block) throw new Error(`${kind} ${address} is not declared`);
    const out = new Map<Value, Record<string, Value>>();
    if (block['for_each'] !== undefined) {
      const each = await this.json(block['for_each']);
      const pairs: [Value, Value][] = Array.isArray(each) ? each.map((x) => [x, x]) : entries(each, `${address} for_each`);
      for (const [key, value] of pairs) out.set(key, await this.body(block, { each: { key, value } }));
    } else if (block['count'] !== undefined) {
      const count = num(await this.json(block['count']), `${address} count`);
      for (let index = 0; index < count; index++) out.set(index, await this.body(block, { count: { index } }));
    } else {
      out.set(undefined, await this.body(block));
    }
    return out;
  }

  private async traverse(value: Value, parts: readonly { type: string; segment: string }[], what: string): Promise<Value> {
    let v = value;
    for (const part of parts) {
      const key: unknown = part.type === 'indexTraversal' ? JSON.parse(part.segment) : part.segment;
      v = this.index(v, key, `${what}.${part.segment}`);
    }
    return v;
  }

  private index(v: Value, key: unknown, what: string): Value {
    if (Array.isArray(v) && typeof key === 'number') {
      if (key < 0 || key >= v.length) throw new Error(`${what}: index ${key} out of range`);
      return v[key];
    }
    if (isObject(v) && typeof key === 'string') {
      if (!(key in v)) throw new Error(`${what}: no attribute or key ${JSON.stringify(key)}`);
      return v[key];
    }
    throw new Error(`${what}: cannot index ${typeName(v)} with ${JSON.stringify(key)}`);
  }

  private async root(name: string, rest: { type: string; segment: string }[], scope: Scope): Promise<[Value, typeof rest]> {
    if (name in scope) return [scope[name], rest];
    const [first, second, ...more] = rest;
    if (name === 'var') {
      if (!first || !(first.segment in this.vars)) throw new Error(`var.${first?.segment} is not declared (or not given)`);
      return [this.vars[first.segment], [second, ...more].filter((p) => p !== undefined)];
    }
    if (name === 'local') return [await this.local(first!.segment), [second, ...more].filter((p) => p !== undefined)];
    const address = name === 'data' ? `data.${first!.segment}.${second!.segment}` : `${name}.${first!.segment}`;
    if (!(address in this.stubs)) throw new NotSimulated(`${address} has no stub in this test`);
    return [this.stubs[address], name === 'data' ? more : [second, ...more].filter((p) => p !== undefined)];
  }

  private async node(n: AstNode, scope: Scope): Promise<Value> {
    const meta = n.meta ?? {};
    const child = (i: number): AstNode => {
      const c = n.children[i];
      if (!c) throw new Error(`malformed ${n.type} expression ${meta.value}`);
      return c;
    };
    switch (n.type) {
      case 'literalValue':
        if (meta.type === 'number') return Number(meta.value);
        if (meta.type === 'bool') return meta.value === 'true';
        if (meta.type === 'string') return unescapeLiteral(meta.value ?? '');
        if (meta.value === 'null') return null;
        throw new NotSimulated(`unsupported literal ${meta.value}`);
      case 'templateWrap':
      case '': // parentheses
        return this.node(child(0), scope);
      case 'template': {
        if (n.children.length === 1 && child(0).type !== 'literalValue') return this.node(child(0), scope);
        let out = '';
        for (const c of n.children) out += tfString(await this.node(c, scope), `template ${meta.value}`);
        return out;
      }
      case 'scopeTraversal': {
        const [first, ...rest] = meta.traversal ?? [];
        const [value, remaining] = await this.root(first!.segment, rest, scope);
        return this.traverse(value, remaining, first!.segment);
      }
      case 'relativeTraversal':
        return this.traverse(await this.node(child(0), scope), meta.traversal ?? [], meta.value ?? '');
      case 'index':
        return this.index(await this.node(child(0), scope), await this.node(child(1), scope), meta.value ?? '');
      case 'conditional':
        return this.node(bool(await this.node(child(0), scope), `condition of ${meta.value}`) ? child(1) : child(2), scope);
      case 'unaryOp': {
        const v = await this.node(child(0), scope);
        if (meta.operator === 'logicalNot') return !bool(v, meta.value ?? '!');
        if (meta.operator === 'negate') return -num(v, meta.value ?? '-');
        throw new NotSimulated(`unsupported operator ${meta.operator}`);
      }
      case 'binaryOp': {
        const l = await this.node(child(0), scope);
        const r = await this.node(child(1), scope);
        const what = meta.value ?? '';
        switch (meta.operator) {
          case 'equal':
            return canonical(l) === canonical(r);
          case 'notEqual':
            return canonical(l) !== canonical(r);
          case 'logicalAnd':
            return bool(l, what) && bool(r, what);
          case 'logicalOr':
            return bool(l, what) || bool(r, what);
          case 'greaterThan':
            return num(l, what) > num(r, what);
          case 'greaterThanOrEqual':
            return num(l, what) >= num(r, what);
          case 'lessThan':
            return num(l, what) < num(r, what);
          case 'lessThanOrEqual':
            return num(l, what) <= num(r, what);
          case 'add':
            return num(l, what) + num(r, what);
          case 'subtract':
            return num(l, what) - num(r, what);
          case 'multiply':
            return num(l, what) * num(r, what);
          default:
            throw new NotSimulated(`unsupported operator ${meta.operator} in ${what}`);
        }
      }
      case 'function': {
        const name = meta.name ?? '';
        if (name === 'can' || name === 'try') {
          for (const c of n.children) {
            try {
              const v = await this.node(c, scope);
              if (name === 'try') return v;
            } catch (err) {
              if (err instanceof NotSimulated) throw err;
              if (name === 'can') return false;
              continue;
            }
            return true;
          }
          throw new Error(`try: no argument could be evaluated in ${meta.value}`);
        }
        const fn = FUNCTIONS[name];
        if (!fn) throw new NotSimulated(`function ${name}() is not implemented by this test's evaluator`);
        const args: Value[] = [];
        for (const c of n.children) args.push(await this.node(c, scope));
        if (meta.expandedFinalArgument) args.push(...arr(args.pop(), `${name}(...)`));
        return fn(args);
      }
      case 'tuple': {
        const out: Value[] = [];
        for (const c of n.children) out.push(await this.node(c, scope));
        return out;
      }
      case 'object': {
        const out: Record<string, Value> = {};
        for (const [k, v] of Object.entries(meta.items ?? {})) {
          const key = /^[A-Za-z_][A-Za-z0-9_-]*$/.test(k) ? k : tfString(await this.expr(k, scope), `object key ${k}`);
          out[key] = await this.expr(v, scope);
        }
        return out;
      }
      case 'for': {
        const collection = await this.expr(meta.collectionExpression ?? '', scope);
        const asObject = meta.openRangeValue === '{';
        const list: Value[] = [];
        const map: Record<string, Value> = {};
        for (const [k, v] of entries(collection, `for ${meta.value}`)) {
          const inner: Scope = { ...scope, ...(meta.keyVar ? { [meta.keyVar]: k } : {}), [meta.valVar ?? '']: v };
          if (meta.conditionalExpression && !bool(await this.expr(meta.conditionalExpression, inner), `if of ${meta.value}`)) continue;
          const value = await this.expr(meta.valueExpression ?? '', inner);
          if (!asObject) {
            list.push(value);
            continue;
          }
          const key = tfString(await this.expr(meta.keyExpression ?? '', inner), `key of ${meta.value}`);
          if (meta.groupedValue) ((map[key] ??= []) as Value[]).push(value);
          else if (key in map) throw new Error(`duplicate key ${key} in ${meta.value}`);
          else map[key] = value;
        }
        return asObject ? map : list;
      }
      default:
        throw new NotSimulated(`unsupported ${n.type} expression ${meta.value}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Variables: type constraints (with optional() defaults), defaults and validations.
// ---------------------------------------------------------------------------------------------

type TfType =
  | { readonly kind: 'any' | 'string' | 'number' | 'bool' }
  | { readonly kind: 'map' | 'list' | 'set'; readonly element: TfType }
  | { readonly kind: 'object'; readonly attributes: Readonly<Record<string, { type: TfType; optional: boolean; default: Value }>> };

async function typeOf(n: AstNode, ev: Evaluator): Promise<TfType> {
  if (n.type === 'scopeTraversal') {
    const name = n.meta?.traversal?.[0]?.segment;
    if (name === 'string' || name === 'number' || name === 'bool' || name === 'any') return { kind: name };
  }
  if (n.type === 'function') {
    const name = n.meta?.name;
    const arg = n.children[0];
    if ((name === 'map' || name === 'list' || name === 'set') && arg) return { kind: name, element: await typeOf(arg, ev) };
    if (name === 'object' && arg?.type === 'object') {
      const attributes: Record<string, { type: TfType; optional: boolean; default: Value }> = {};
      for (const [k, source] of Object.entries(arg.meta?.items ?? {})) {
        const t = await ast(source);
        if (t.type === 'function' && t.meta?.name === 'optional') {
          const type = await typeOf(t.children[0]!, ev);
          const d = t.children[1] ? await ev.expr(t.children[1].meta?.value ?? '') : null;
          attributes[k] = { type, optional: true, default: d === null ? null : convert(type, d, `default of ${k}`) };
        } else {
          attributes[k] = { type: await typeOf(t, ev), optional: false, default: null };
        }
      }
      return { kind: 'object', attributes };
    }
  }
  throw new Error(`unsupported type expression ${n.meta?.value}`);
}

function convert(t: TfType, v: Value, what: string): Value {
  if (v === null || v === undefined) return null;
  switch (t.kind) {
    case 'any':
      return v;
    case 'string':
      return tfString(v, what);
    case 'number':
      if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
      return num(v, what);
    case 'bool':
      if (v === 'true' || v === 'false') return v === 'true';
      return bool(v, what);
    case 'map':
      return Object.fromEntries(Object.entries(obj(v, what)).map(([k, x]) => [k, convert(t.element, x, `${what}["${k}"]`)]));
    case 'list':
      return arr(v, what).map((x, i) => convert(t.element, x, `${what}[${i}]`));
    case 'set':
      return FUNCTIONS['toset']!([arr(v, what).map((x, i) => convert(t.element, x, `${what}[${i}]`))]);
    case 'object': {
      const o = obj(v, what);
      const out: Record<string, Value> = {};
      for (const [k, a] of Object.entries(t.attributes)) {
        if (o[k] === undefined || o[k] === null) {
          if (!a.optional && o[k] === undefined) throw new Error(`${what}: attribute ${k} is required`);
          out[k] = a.default;
        } else {
          out[k] = convert(a.type, o[k], `${what}.${k}`);
        }
      }
      return out;
    }
  }
}

/** The module's variables for these inputs, as Terraform sees them: converted, defaults applied. */
async function variablesFor(mod: Module, inputs: Readonly<Record<string, Value>>): Promise<Record<string, Value>> {
  const bare = new Evaluator(mod, {});
  const out: Record<string, Value> = {};
  for (const name of Object.keys(inputs)) if (!(name in mod.variables)) throw new Error(`${mod.dir} has no variable ${name}`);
  for (const [name, v] of Object.entries(mod.variables)) {
    const hasDefault = 'default' in v;
    let value = name in inputs ? inputs[name] : hasDefault ? await bare.json(v['default']) : undefined;
    if (value === undefined) throw new Error(`variable ${name} of ${mod.dir} is required`);
    if (value === null && v['nullable'] === false && hasDefault) value = await bare.json(v['default']);
    const type = v['type'] === undefined ? ({ kind: 'any' } as const) : await typeOf(await ast(expressionSource(str(v['type'], `type of ${name}`))), bare);
    out[name] = convert(type, value, `var.${name}`);
  }
  return out;
}

/** The error messages of the validations these inputs fail; an error in a condition is thrown. */
async function problems(mod: Module, inputs: Readonly<Record<string, Value>>, only?: string): Promise<string[]> {
  const vars = await variablesFor(mod, inputs);
  const ev = new Evaluator(mod, vars);
  const out: string[] = [];
  for (const [name, v] of Object.entries(mod.variables)) {
    if (only !== undefined && name !== only) continue;
    for (const validation of arr(v['validation'] ?? [], `validation of ${name}`)) {
      const { condition, error_message } = validation as JsonObject;
      if (!bool(await ev.json(condition), `validation of var.${name}`)) out.push(`var.${name}: ${String(error_message)}`);
    }
  }
  return out;
}

async function validates(mod: Module, inputs: Readonly<Record<string, Value>>, only?: string): Promise<boolean> {
  return (await problems(mod, inputs, only)).length === 0;
}

// ---------------------------------------------------------------------------------------------
// Shared samples.
// ---------------------------------------------------------------------------------------------

const BUCKET = 'walbridge-test-bucket';
const BUCKET_ARN = `arn:aws:s3:::${BUCKET}`;
const KMS_ARN = 'arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555';
const PROJECT = 'walbridge-test';
const PREFIXES = ['', 'pg', 'prod/pg.eu-1'];
/** db1 is a prefix of db10: a policy for one must not reach the other. */
const NAMESPACE_NAMES = ['db1', 'db10', 'Orders.v2_b-1'];

const WAL_NAMES = {
  segment: '000000010000000A000000FF',
  partial: '00000002000000000000000C.partial',
  backup: '000000010000000000000002.00000028.backup',
  history: '00000002.history',
  /** The segment being written, which walbridge stream ships in chunks. */
  streamed: '000000010000000B00000000',
};

function walKey(namespace: string, name: string): string {
  const file = parseWalFileName(name);
  if (!file) throw new Error(`bad WAL name ${name}`);
  return walFileKey(namespace, file);
}

/** What walbridge writes for a namespace: relative keys by kind. */
function keysOf(namespace: string) {
  return {
    identity: identityKey(namespace),
    segment: walKey(namespace, WAL_NAMES.segment),
    partial: walKey(namespace, WAL_NAMES.partial),
    backup: walKey(namespace, WAL_NAMES.backup),
    history: walKey(namespace, WAL_NAMES.history),
    triggerAll: triggerKey(namespace, 'all'),
    triggerStandby: triggerKey(namespace, 'standby-1'),
    chunk: chunkKey(namespace, WAL_NAMES.streamed, { start: 0, end: 0x2000 }),
    /** What walbridge check uploads (src/archive/check/check.ts). */
    probe: `${checkPrefix(namespace)}walbridge-check-0123456789ab`,
  };
}

/** Keys next to a namespace's stream/ prefix, but not under it. */
function nearStream(namespace: string): string[] {
  const stream = streamPrefix(namespace);
  return [stream.slice(0, -1), `${stream.slice(0, -1)}-old/${WAL_NAMES.streamed}/00000000-00002000`];
}

const MODULES = {
  'aws-s3': path.join(TERRAFORM, 'modules/aws-s3'),
  gcs: path.join(TERRAFORM, 'modules/gcs'),
} as const;
const EXAMPLES = {
  'aws-s3': path.join(TERRAFORM, 'examples/aws-s3'),
  gcs: path.join(TERRAFORM, 'examples/gcs'),
} as const;

/** Stubs of what only Terraform and the providers know: the attributes of the resources. */
function stubsFor(module: keyof typeof MODULES): Stubs {
  if (module === 'aws-s3') {
    return {
      'aws_s3_bucket.this': { bucket: BUCKET, id: BUCKET, arn: BUCKET_ARN, region: 'eu-west-1' },
      'aws_kms_key.this': [{ arn: KMS_ARN }],
      ...Object.fromEntries(
        ['primary', 'standby', 'operator'].map((a) => [
          `data.aws_iam_policy_document.${a}`,
          new Proxy({}, { get: (_t, ns) => ({ json: `{"${a}":"${String(ns)}"}` }), has: () => true }),
        ]),
      ),
    };
  }
  return {
    'google_storage_bucket.this': { name: BUCKET, url: `gs://${BUCKET}` },
    'data.google_storage_project_service_account.this': [{ email_address: 'service-1234@gs-project-accounts.iam.gserviceaccount.com' }],
    'google_service_account.this': new Proxy(
      {},
      { get: (_t, key) => ({ email: `${String(key).replace('/', '-').toLowerCase()}@${PROJECT}.iam.gserviceaccount.com` }), has: () => true },
    ),
  };
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

describe('Terraform files', () => {
  const files = tfFiles(TERRAFORM);

  it('are there: two modules and an example of each', () => {
    for (const dir of [...Object.values(MODULES), ...Object.values(EXAMPLES)]) {
      for (const f of ['versions.tf', 'variables.tf', 'outputs.tf']) expect(files).toContain(path.join(dir, f));
    }
    for (const dir of Object.values(EXAMPLES)) expect(files).toContain(path.join(dir, 'terraform.tfvars.example'));
  });

  it.each(files.map((f) => [path.relative(TERRAFORM, f), f]))('%s parses', async (_name, file) => {
    await expect(parse(file, readFileSync(file, 'utf8'))).resolves.toBeTypeOf('object');
  });

  it('would be caught not parsing', async () => {
    await expect(parse('broken.tf', 'resource "aws_s3_bucket" "x" {\n  bucket = "a"\n')).rejects.toThrow();
  });
});

describe.each(Object.entries(MODULES))('module %s', (name, dir) => {
  const mod = new Module(dir);
  const provider = name === 'aws-s3' ? 'aws' : 'google';
  const scheme = name === 'aws-s3' ? 's3' : 'gs';
  const stubs = stubsFor(name as keyof typeof MODULES);
  const namespaces = Object.fromEntries(NAMESPACE_NAMES.map((ns) => [ns, {}]));
  const required = name === 'aws-s3' ? { bucket_name: BUCKET } : { project: PROJECT, location: 'EU', bucket_name: BUCKET };

  it('pins Terraform and its provider in versions.tf', () => {
    const tf = only(mod.files['versions.tf']?.['terraform'], 'terraform');
    expect(str(tf['required_version'], 'required_version')).toMatch(/^>= ?1\.\d+/);
    const providers = only(tf['required_providers'], 'required_providers');
    const used = new Set([...Object.keys(mod.resources), ...Object.keys(mod.data)].map((a) => a.split('_')[0]));
    expect([...used]).toEqual([provider]);
    const p = obj(providers[provider], provider);
    expect(p['source']).toBe(`hashicorp/${provider}`);
    expect(str(p['version'], 'version')).toMatch(/^>= ?5\.\d+.*, ?< ?\d+\.0$/);
  });

  it('describes every variable and output', () => {
    for (const [v, body] of [...Object.entries(mod.variables), ...Object.entries(mod.outputs)]) {
      expect(typeof body['description'] === 'string' && body['description'].length > 10, `${v} has a description`).toBe(true);
    }
    for (const v of ['bucket_name', 'prefix', 'namespaces']) expect(mod.variables[v]?.['validation'], `${v} is validated`).toBeDefined();
  });

  it('declares every var, local and resource it uses; validations only look at their own variable', () => {
    const exprs = mod.expressions();
    const refs = (re: RegExp) => new Set(exprs.flatMap((e) => [...e.matchAll(re)].map((m) => m[1]!)));
    expect([...refs(/\bvar\.([A-Za-z_][\w-]*)/g)].filter((v) => !(v in mod.variables))).toEqual([]);
    expect([...refs(/\blocal\.([A-Za-z_][\w-]*)/g)].filter((l) => !(l in mod.locals))).toEqual([]);
    expect([...refs(/(?<!data\.)\b((?:aws|google)_[a-z0-9_]+\.[A-Za-z_][\w-]*)/g)].filter((r) => !(r in mod.resources))).toEqual([]);
    expect([...refs(/\bdata\.((?:aws|google)_[a-z0-9_]+\.[A-Za-z_][\w-]*)/g)].filter((r) => !(r in mod.data))).toEqual([]);
    for (const [v, body] of Object.entries(mod.variables)) {
      for (const validation of arr(body['validation'] ?? [], 'validation')) {
        const condition = str((validation as JsonObject)['condition'], 'condition');
        expect([...new Set([...condition.matchAll(/\bvar\.([\w-]+)/g)].map((m) => m[1]))], `validation of ${v}`).toEqual([v]);
      }
    }
  });

  it('outputs the bucket, WALBRIDGE_REPO and the identities of the actors', () => {
    const identities = name === 'aws-s3' ? ['policy_arns', 'role_arns', 'role_names'] : ['service_account_emails', 'members', 'custom_role_names'];
    for (const o of ['bucket_name', 'walbridge_repo', 'environment', ...identities]) expect(mod.outputs, o).toHaveProperty(o);
  });

  it('accepts only prefixes walbridge takes as they are', async () => {
    const ok = ['', 'pg', 'prod/pg', 'a.b/c_d/e-f', 'x/y/z/w'];
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a Terraform interpolation as a hostile prefix
    const refused = ['/pg', 'pg/', 'a//b', '.', '..', 'a/./b', 'a/../b', 'a b', 'a*', 'a?b', '${x}', 'a\nb'];
    for (const prefix of [...ok, ...refused]) {
      const accepted = await validates(mod, { ...required, namespaces, prefix }, 'prefix');
      expect(accepted, `prefix ${JSON.stringify(prefix)}`).toBe(ok.includes(prefix));
      if (accepted) expect(parseRepoUrl(`${scheme}://${BUCKET}/${prefix}`), prefix).toEqual({ scheme, bucket: BUCKET, prefix });
    }
  });

  it('accepts exactly the namespaces walbridge accepts', async () => {
    const samples = ['db1', 'Orders.v2_b-1', '9', 'a'.repeat(128), 'a'.repeat(129), '', '-db', '.db', 'a..b', 'a/b', 'a b', 'é', 'a\n'];
    for (const ns of samples) {
      const accepted = await validates(mod, { ...required, namespaces: { [ns]: {} } }, 'namespaces');
      expect(accepted, `namespace ${JSON.stringify(ns)}`).toBe(namespaceProblem(ns) === undefined);
    }
    await expect(validates(mod, { ...required, namespaces: {} }, 'namespaces')).resolves.toBe(false);
  });

  it.each(['wal_retention_days', 'stream_retention_days'])('accepts whole days or nothing as %s', async (setting) => {
    const check = (days: number | null) => validates(mod, { ...required, namespaces: { db1: { [setting]: days } } }, 'namespaces');
    for (const days of [null, 0, 1, 14, 3650]) await expect(check(days), String(days)).resolves.toBe(true);
    for (const days of [-1, 1.5]) await expect(check(days), String(days)).resolves.toBe(false);
  });

  describe.each(PREFIXES)('with prefix %j', (prefix) => {
    const inputs = { ...required, prefix, namespaces };

    it('names keys exactly as layout.ts does', async () => {
      const ev = new Evaluator(mod, await variablesFor(mod, inputs), stubs);
      const layout = obj(await ev.local('layout'), 'local.layout');
      expect(Object.keys(layout).sort()).toEqual([...NAMESPACE_NAMES].sort());
      for (const ns of NAMESPACE_NAMES) {
        expect(layout[ns]).toEqual({
          namespace: joinKey(prefix, namespacePrefix(ns)),
          identity: joinKey(prefix, identityKey(ns)),
          wal: joinKey(prefix, walPrefix(ns)),
          history: joinKey(prefix, historyPrefix(ns)),
          trigger: joinKey(prefix, triggerPrefix(ns)),
          stream: joinKey(prefix, streamPrefix(ns)),
          check: joinKey(prefix, checkPrefix(ns)),
        });
      }
    });

    it('outputs the repository URL walbridge formats and parses, and settings walbridge knows', async () => {
      const ev = new Evaluator(mod, await variablesFor(mod, inputs), stubs);
      const repo = await ev.json(mod.outputs['walbridge_repo']?.['value']);
      expect(repo).toBe(formatRepo({ scheme, bucket: BUCKET, prefix }));
      expect(parseRepoUrl(str(repo, 'repo'))).toEqual({ scheme, bucket: BUCKET, prefix });
      const environment = obj(await ev.json(mod.outputs['environment']?.['value']), 'environment');
      const known = new Set(SETTINGS.map((s) => s.env));
      for (const ns of NAMESPACE_NAMES) {
        const env = obj(environment[ns], `environment ${ns}`);
        expect(env).toMatchObject({ WALBRIDGE_REPO: repo, WALBRIDGE_NAMESPACE: ns });
        for (const k of Object.keys(env)) expect(known, k).toContain(k);
      }
    });
  });
});

// ---------------------------------------------------------------------------------------------
// S3: lifecycle and IAM, the latter simulated against the requests the S3 driver sends.
// ---------------------------------------------------------------------------------------------

interface S3Request {
  /** The S3 API operation, for messages: IAM decides on the action, resource and context. */
  readonly operation?: string;
  readonly action: string;
  readonly resource: string;
  readonly context: Readonly<Record<string, string>>;
}

interface Statement {
  readonly effect: 'Allow' | 'Deny';
  readonly actions: readonly string[];
  readonly resources: readonly string[];
  readonly conditions: readonly { test: string; variable: string; values: readonly string[] }[];
}

function statements(doc: Record<string, Value>): Statement[] {
  return arr(doc['statement'] ?? [], 'statement').map((s) => {
    const st = obj(s, 'statement');
    return {
      effect: (st['effect'] ?? 'Allow') as 'Allow' | 'Deny',
      actions: arr(st['actions'], 'actions').map((a) => str(a, 'action')),
      resources: arr(st['resources'], 'resources').map((r) => str(r, 'resource')),
      conditions: arr(st['condition'] ?? [], 'condition').map((c) => {
        const cond = obj(c, 'condition');
        return {
          test: str(cond['test'], 'test'),
          variable: str(cond['variable'], 'variable'),
          values: arr(cond['values'], 'values').map((x) => str(x, 'value')),
        };
      }),
    };
  });
}

/** IAM's wildcards: `*` any run of characters (slashes included), `?` one character. */
function globMatch(pattern: string, value: string, ignoreCase = false): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, ignoreCase ? 'is' : 's').test(value);
}

function statementMatches(s: Statement, req: S3Request): boolean {
  if (!s.actions.some((a) => globMatch(a, req.action, true))) return false;
  if (!s.resources.some((r) => globMatch(r, req.resource))) return false;
  return s.conditions.every((c) => {
    const actual = req.context[c.variable];
    // Null: "true" when the key is absent from the request context, "false" when it is present.
    if (c.test === 'Null') return c.values.some((v) => (v.toLowerCase() === 'true') === (actual === undefined));
    // Any other operator on an absent key is false (no ...IfExists here), in an Allow as in a Deny.
    if (actual === undefined) return false;
    switch (c.test) {
      case 'StringLike':
        return c.values.some((v) => globMatch(v, actual));
      case 'StringEquals':
        return c.values.includes(actual);
      case 'Bool':
        return c.values.some((v) => v.toLowerCase() === actual.toLowerCase());
      case 'NumericLessThan':
        return c.values.some((v) => Number(actual) < Number(v));
      default:
        throw new Error(`condition operator ${c.test} is not simulated`);
    }
  });
}

/** IAM's decision, for one account: an explicit deny wins, then an allow of the identity policy. */
function s3Allowed(identity: readonly Statement[], bucketPolicy: readonly Statement[], req: S3Request): boolean {
  const full = { ...req, context: { 'aws:SecureTransport': 'true', 's3:TlsVersion': '1.3', ...req.context } };
  if ([...identity, ...bucketPolicy].some((s) => s.effect === 'Deny' && statementMatches(s, full))) return false;
  return identity.some((s) => s.effect === 'Allow' && statementMatches(s, full));
}

const PUT = { body: Buffer.from('x'), md5: createHash('md5').update('x').digest(), metadata: {} };
/** Just over the single-request limit: the driver sends it as a multipart upload of several parts. */
const BIG_BODY = Buffer.alloc(SINGLE_REQUEST_LIMIT + 1, 0x5a);
const BIG_PUT = { body: BIG_BODY, md5: createHash('md5').update(BIG_BODY).digest(), metadata: {} };

/**
 * The request context S3 gives IAM for the object-creating requests, all authorized as
 * s3:PutObject: s3:ObjectCreationOperation is true for PutObject and CompleteMultipartUpload
 * (the object comes into existence), false for CreateMultipartUpload and UploadPart (they take no
 * conditional header); s3:if-none-match is there only when the request has an If-None-Match header.
 */
function creationContext(creates: boolean, ifNoneMatch?: string): Record<string, string> {
  return { 's3:ObjectCreationOperation': String(creates), ...(ifNoneMatch === undefined ? {} : { 's3:if-none-match': ifNoneMatch }) };
}

/** An SDK client stand-in that records the IAM authorization each command needs. Objects all look absent. */
function recordingClient(requests: S3Request[]) {
  const object = (key: string | undefined) => `${BUCKET_ARN}/${key}`;
  return {
    send: async (command: unknown): Promise<unknown> => {
      if (command instanceof HeadObjectCommand || command instanceof GetObjectCommand) {
        requests.push({ action: 's3:GetObject', resource: object(command.input.Key), context: {} });
        requests.push({ action: 's3:ListBucket', resource: BUCKET_ARN, context: { 's3:prefix': command.input.Key ?? '' } });
        throw Object.assign(new Error('absent'), { name: 'NotFound', $metadata: { httpStatusCode: 404 } });
      }
      if (command instanceof PutObjectCommand) {
        requests.push({
          operation: 'PutObject',
          action: 's3:PutObject',
          resource: object(command.input.Key),
          context: creationContext(true, command.input.IfNoneMatch),
        });
        return {};
      }
      if (command instanceof CreateMultipartUploadCommand) {
        requests.push({ operation: 'CreateMultipartUpload', action: 's3:PutObject', resource: object(command.input.Key), context: creationContext(false) });
        return { UploadId: 'upload-1' };
      }
      if (command instanceof UploadPartCommand) {
        requests.push({ operation: 'UploadPart', action: 's3:PutObject', resource: object(command.input.Key), context: creationContext(false) });
        return { ETag: `"part-${command.input.PartNumber}"` };
      }
      if (command instanceof CompleteMultipartUploadCommand) {
        requests.push({
          operation: 'CompleteMultipartUpload',
          action: 's3:PutObject',
          resource: object(command.input.Key),
          context: creationContext(true, command.input.IfNoneMatch),
        });
        return {};
      }
      if (command instanceof AbortMultipartUploadCommand) {
        requests.push({ operation: 'AbortMultipartUpload', action: 's3:AbortMultipartUpload', resource: object(command.input.Key), context: {} });
        return {};
      }
      if (command instanceof ListObjectsV2Command) {
        requests.push({ action: 's3:ListBucket', resource: BUCKET_ARN, context: { 's3:prefix': command.input.Prefix ?? '' } });
        return { Contents: [], IsTruncated: false };
      }
      if (command instanceof DeleteObjectsCommand) {
        for (const o of command.input.Delete?.Objects ?? []) requests.push({ action: 's3:DeleteObject', resource: object(o.Key), context: {} });
        return { Errors: [] };
      }
      throw new Error(`unexpected S3 command ${(command as object).constructor.name}`);
    },
  };
}

/** What IAM is asked for commands sent as they are, not through the driver: requests walbridge never makes. */
async function commandRequests(commands: readonly unknown[]): Promise<S3Request[]> {
  const requests: S3Request[] = [];
  const client = recordingClient(requests);
  for (const command of commands) await client.send(command);
  return requests;
}

/**
 * The real S3 driver, its SDK client replaced by one that records the IAM authorizations each
 * request needs. Objects all look absent: HEAD and GET of a missing key answer 404, not 403, only
 * to a principal allowed s3:ListBucket with the key as s3:prefix.
 */
async function s3Requests(prefix: string, operations: (store: Store) => Promise<void>): Promise<S3Request[]> {
  const store = new S3Store({ bucket: BUCKET, prefix, region: 'eu-west-1', pathStyle: false, checksum: 'when-required' });
  if (!('client' in store)) throw new Error('S3Store has no "client" any more: adapt this test');
  const requests: S3Request[] = [];
  Object.assign(store, { client: recordingClient(requests) });
  await operations(store);
  if (requests.length === 0) throw new Error('the driver sent nothing through the recording client');
  return requests;
}

/** The primary's archive objects in a namespace, as IAM resources: wal/, history/ and exactly identity.json. */
function archiveResources(prefix: string, namespace: string): string[] {
  return [walPrefix(namespace), historyPrefix(namespace)]
    .map((p) => `${BUCKET_ARN}/${joinKey(prefix, p)}*`)
    .concat(`${BUCKET_ARN}/${joinKey(prefix, identityKey(namespace))}`);
}

async function drain(it: AsyncIterable<unknown>): Promise<void> {
  for await (const _entry of it);
}

/** The store operations each actor's commands perform (push.ts, stream.ts, fetch.ts, wait.ts, cleanup.ts, trigger.ts). */
const ACTOR_OPERATIONS = {
  primary: (ns: string) => async (s: Store) => {
    const k = keysOf(ns);
    for (const key of [k.identity, k.segment, k.partial, k.backup, k.history]) {
      await s.head(key);
      await s.get(key).catch(() => undefined);
      await s.putIfAbsent(key, PUT);
    }
    // A segment larger than one request (wal_segment_size up to 1 GiB) goes up in parts.
    await s.putIfAbsent(k.segment, BIG_PUT);
  },
  /** walbridge stream, with the primary's credentials: leftovers, resume, ship, clean up (SegmentStreamer). */
  streamer: (ns: string) => async (s: Store) => {
    const k = keysOf(ns);
    await drain(s.list(streamPrefix(ns)));
    await listChunks(s, ns, WAL_NAMES.streamed);
    await s.putIfAbsent(k.chunk, PUT);
    await s.head(k.segment);
    await s.deleteMany([k.chunk, chunkKey(ns, WAL_NAMES.streamed, { start: 0x2000, end: 0x4000 })]);
  },
  /** walbridge check, with the primary's credentials: its upload probe, removed again where a store took it. */
  checker: (ns: string) => async (s: Store) => {
    const k = keysOf(ns);
    await drain(s.list(namespacePrefix(ns)));
    await s.head(k.identity);
    await s.get(k.identity).catch(() => undefined);
    await s.putIfAbsent(k.probe, PUT);
    await s.deleteMany([k.probe]);
  },
  standby: (ns: string, opts: { cleanup: boolean; clear: boolean }) => async (s: Store) => {
    const k = keysOf(ns);
    await s.checkBucket();
    for (const key of [k.identity, k.segment, k.partial, k.backup, k.history, k.triggerAll, k.triggerStandby]) {
      await s.head(key);
      await s.get(key).catch(() => undefined);
    }
    // A smart failover restores the streamed part of an unarchived segment (restoreStreamed).
    await listChunks(s, ns, WAL_NAMES.streamed);
    await s.get(k.chunk).catch(() => undefined);
    if (opts.cleanup) {
      await drain(s.list(walPrefix(ns)));
      await s.deleteMany([k.segment, k.partial, k.backup]);
    }
    if (opts.clear) await s.deleteMany([k.triggerAll, k.triggerStandby]);
  },
  operator: (ns: string) => async (s: Store) => {
    const k = keysOf(ns);
    await s.deleteMany([k.triggerAll]);
    await s.putIfAbsent(k.triggerAll, PUT);
    await s.head(k.triggerStandby);
    await s.get(k.triggerAll).catch(() => undefined);
    await drain(s.list(triggerPrefix(ns)));
  },
};

describe('module aws-s3', () => {
  const mod = new Module(MODULES['aws-s3']);
  const stubs = stubsFor('aws-s3');
  const namespaces = {
    // Streamed chunks expire after 7 days by default (db1), here after 2 (db10), or never (0);
    // walbridge stream runs beside db1's and db10's primaries, not beside Orders'.
    db1: { wal_retention_days: 14, primary_stream: true },
    db10: { standby_cleanup: true, standby_trigger_clear: false, stream_retention_days: 2, primary_stream: true },
    'Orders.v2_b-1': { wal_retention_days: 0, stream_retention_days: 0 },
  };
  const evaluatorFor = async (inputs: Record<string, Value>) =>
    new Evaluator(mod, await variablesFor(mod, { bucket_name: BUCKET, namespaces, ...inputs }), stubs);

  it('blocks public access, enforces bucket ownership and encrypts by default', async () => {
    const ev = await evaluatorFor({});
    const [pab] = (await ev.instances('aws_s3_bucket_public_access_block.this')).values();
    expect(pab).toMatchObject({ block_public_acls: true, block_public_policy: true, ignore_public_acls: true, restrict_public_buckets: true });
    const [ownership] = (await ev.instances('aws_s3_bucket_ownership_controls.this')).values();
    expect(ownership).toMatchObject({ rule: [{ object_ownership: 'BucketOwnerEnforced' }] });
    const [sse] = (await ev.instances('aws_s3_bucket_server_side_encryption_configuration.this')).values();
    expect(sse).toMatchObject({ rule: [{ apply_server_side_encryption_by_default: [{ sse_algorithm: 'AES256', kms_master_key_id: null }] }] });
    const kms = await (await evaluatorFor({ encryption: 'SSE-KMS', kms_key_arn: KMS_ARN })).instances(
      'aws_s3_bucket_server_side_encryption_configuration.this',
    );
    expect([...kms.values()][0]).toMatchObject({
      rule: [{ apply_server_side_encryption_by_default: [{ sse_algorithm: 'aws:kms', kms_master_key_id: KMS_ARN }], bucket_key_enabled: true }],
    });
    expect((await (await evaluatorFor({ encryption: 'SSE-KMS' })).instances('aws_kms_key.this')).size).toBe(1);
    expect((await (await evaluatorFor({ encryption: 'SSE-KMS', kms_key_arn: KMS_ARN })).instances('aws_kms_key.this')).size).toBe(0);
  });

  it('denies every request made without TLS, to anyone', async () => {
    const ev = await evaluatorFor({});
    const [policy] = (await ev.instances('aws_iam_policy_document.bucket', 'data')).values();
    const deny = arr(policy!['statement'], 'statement')
      .map((s) => obj(s, 'statement'))
      .find((s) => s['sid'] === 'DenyInsecureTransport');
    expect(deny).toMatchObject({
      effect: 'Deny',
      actions: ['s3:*'],
      resources: [BUCKET_ARN, `${BUCKET_ARN}/*`],
      principals: [{ type: '*', identifiers: ['*'] }],
      condition: [{ test: 'Bool', variable: 'aws:SecureTransport', values: ['false'] }],
    });
    const primary = (await ev.instances('aws_iam_policy_document.primary', 'data')).get('db1');
    const put: S3Request = { action: 's3:PutObject', resource: `${BUCKET_ARN}/${keysOf('db1').segment}`, context: creationContext(true, '*') };
    expect(s3Allowed(statements(primary!), statements(policy!), put)).toBe(true);
    expect(s3Allowed(statements(primary!), statements(policy!), { ...put, context: { ...put.context, 'aws:SecureTransport': 'false' } })).toBe(false);
  });

  describe.each(PREFIXES)('with prefix %j', (prefix) => {
    it.each([false, true])("expires WAL and streamed chunks only, where asked, and check's probes after a day (versioning %s)", async (versioning) => {
      const ev = await evaluatorFor({ prefix, versioning });
      const [lifecycle] = (await ev.instances('aws_s3_bucket_lifecycle_configuration.this')).values();
      const rules = arr(lifecycle!['rule'], 'rule').map((r) => obj(r, 'rule'));
      const prefixOf = (r: Record<string, unknown>) => str(obj(arr(r['filter'], 'filter')[0], 'filter')['prefix'], 'filter prefix');
      const expiring = new Map<string, unknown>();
      for (const r of rules) {
        expect(r['status']).toBe('Enabled');
        for (const e of arr(r['expiration'] ?? [], 'expiration')) {
          const days = obj(e, 'expiration')['days'];
          if (days !== undefined && days !== null) expiring.set(prefixOf(r), days);
        }
      }
      // Exactly the WAL and stream prefixes (layout.ts) of the namespaces with a retention, and every check/.
      expect(Object.fromEntries(expiring)).toEqual({
        [joinKey(prefix, walPrefix('db1'))]: 14,
        [joinKey(prefix, streamPrefix('db1'))]: 7,
        [joinKey(prefix, streamPrefix('db10'))]: 2,
        ...Object.fromEntries(NAMESPACE_NAMES.map((ns) => [joinKey(prefix, checkPrefix(ns)), 1])),
      });
      for (const ns of NAMESPACE_NAMES) {
        const k = keysOf(ns);
        for (const key of [k.identity, k.history, k.triggerAll]) {
          for (const p of expiring.keys()) expect(joinKey(prefix, key).startsWith(p), `${key} expires under ${p}`).toBe(false);
        }
      }
      const expires = (key: string) => [...expiring.keys()].some((p) => joinKey(prefix, key).startsWith(p));
      for (const key of [keysOf('db1').segment, keysOf('db1').partial, keysOf('db1').backup, keysOf('db1').chunk, keysOf('db10').chunk])
        expect(expires(key), key).toBe(true);
      for (const key of [keysOf('db10').segment, keysOf('Orders.v2_b-1').segment, keysOf('Orders.v2_b-1').chunk]) expect(expires(key), key).toBe(false);
      // Rules only on a namespace, its wal/, its stream/ or its check/, with distinct IDs.
      const allowedPrefixes = NAMESPACE_NAMES.flatMap((ns) =>
        [namespacePrefix(ns), walPrefix(ns), streamPrefix(ns), checkPrefix(ns)].map((p) => joinKey(prefix, p)),
      );
      for (const r of rules) expect(allowedPrefixes, prefixOf(r)).toContain(prefixOf(r));
      expect(new Set(rules.map((r) => r['id'])).size).toBe(rules.length);
      // With versioning, deleted chunks' noncurrent versions go after a day, and their delete markers
      // with them (by the days of the expiry, or said where chunks never expire).
      for (const ns of NAMESPACE_NAMES) {
        const stream = rules.filter((r) => prefixOf(r) === joinKey(prefix, streamPrefix(ns)));
        const expiresChunks = ns !== 'Orders.v2_b-1';
        expect(stream.length, ns).toBe(versioning || expiresChunks ? 1 : 0);
        for (const r of stream) {
          expect(r['noncurrent_version_expiration'] ?? [], ns).toEqual(versioning ? [{ noncurrent_days: 1 }] : []);
          if (!expiresChunks) expect(r['expiration'], ns).toEqual([{ expired_object_delete_marker: true }]);
          expect(r['abort_incomplete_multipart_upload'], ns).toBeUndefined();
        }
      }
      // check/'s probes: their noncurrent versions (with versioning) go after a day too.
      for (const ns of NAMESPACE_NAMES) {
        const check = rules.filter((r) => prefixOf(r) === joinKey(prefix, checkPrefix(ns)));
        expect(check.length, ns).toBe(1);
        expect(check[0]!['noncurrent_version_expiration'] ?? [], ns).toEqual(versioning ? [{ noncurrent_days: 1 }] : []);
      }
      // Incomplete multipart uploads are aborted per namespace; noncurrent versions expire with versioning.
      for (const ns of NAMESPACE_NAMES) {
        const rule = rules.find((r) => prefixOf(r) === joinKey(prefix, namespacePrefix(ns)));
        expect(rule, ns).toMatchObject({ abort_incomplete_multipart_upload: [{ days_after_initiation: 1 }] });
        expect(arr(rule!['noncurrent_version_expiration'] ?? [], 'noncurrent').length).toBe(versioning ? 1 : 0);
      }
    });

    it.each(['SSE-S3', 'SSE-KMS'])('lets each actor do what its commands do, and no more (%s)', async (encryption) => {
      const ev = await evaluatorFor({ prefix, encryption });
      const [bucketDoc] = (await ev.instances('aws_iam_policy_document.bucket', 'data')).values();
      const bucketPolicy = statements(bucketDoc!);
      const docs = {
        primary: await ev.instances('aws_iam_policy_document.primary', 'data'),
        standby: await ev.instances('aws_iam_policy_document.standby', 'data'),
        operator: await ev.instances('aws_iam_policy_document.operator', 'data'),
      };
      const policy = (actor: keyof typeof docs, ns: string) => statements(docs[actor].get(ns)!);
      const verdicts = async (actor: keyof typeof docs, ns: string, ops: (s: Store) => Promise<void>) =>
        (await s3Requests(prefix, ops)).map((r) => ({ ...r, allowed: s3Allowed(policy(actor, ns), bucketPolicy, r) }));
      const allAllowed = async (actor: keyof typeof docs, ns: string, ops: (s: Store) => Promise<void>) =>
        expect(
          (await verdicts(actor, ns, ops)).filter((v) => !v.allowed),
          `${actor} of ${ns}`,
        ).toEqual([]);
      const denied = async (actor: keyof typeof docs, ns: string, what: string, ops: (s: Store) => Promise<void>) =>
        expect(
          (await verdicts(actor, ns, ops)).some((v) => !v.allowed),
          `${actor} of ${ns} must not ${what}`,
        ).toBe(true);

      for (const [ns, cfg] of Object.entries(namespaces)) {
        const cleanup = 'standby_cleanup' in cfg && cfg.standby_cleanup === true;
        const clear = !('standby_trigger_clear' in cfg) || cfg.standby_trigger_clear !== false;
        const other = ns === 'db1' ? 'db10' : 'db1';
        const k = keysOf(ns);
        const o = keysOf(other);

        await allAllowed('primary', ns, ACTOR_OPERATIONS.primary(ns));
        const streaming = 'primary_stream' in cfg && cfg.primary_stream === true;
        if (streaming) await allAllowed('primary', ns, ACTOR_OPERATIONS.streamer(ns));
        else await denied('primary', ns, 'stream without primary_stream', ACTOR_OPERATIONS.streamer(ns));
        await allAllowed('primary', ns, ACTOR_OPERATIONS.checker(ns));
        await allAllowed('standby', ns, ACTOR_OPERATIONS.standby(ns, { cleanup, clear }));
        await allAllowed('operator', ns, ACTOR_OPERATIONS.operator(ns));

        // The primary deletes streamed chunks (walbridge stream's cleanup) and check's probes, nothing else.
        for (const [kind, key] of Object.entries(k))
          if (kind !== 'chunk' && kind !== 'probe') await denied('primary', ns, `delete ${key}`, (s) => s.deleteMany([key]));
        await denied('primary', ns, "delete another namespace's probes", (s) => s.deleteMany([o.probe]));
        for (const actor of ['standby', 'operator'] as const) {
          await denied(actor, ns, 'upload a check probe', (s) => s.putIfAbsent(k.probe, PUT).then(() => undefined));
          await denied(actor, ns, 'delete a check probe', (s) => s.deleteMany([k.probe]));
        }
        for (const key of [o.chunk, ...nearStream(ns)]) await denied('primary', ns, `delete ${key}`, (s) => s.deleteMany([key]));
        await denied('primary', ns, 'stream into another namespace', (s) => s.putIfAbsent(o.chunk, PUT).then(() => undefined));
        await denied('primary', ns, 'write a trigger', (s) => s.putIfAbsent(k.triggerAll, PUT).then(() => undefined));
        await denied('primary', ns, 'read another namespace', (s) =>
          s.get(o.identity).then(
            () => undefined,
            () => undefined,
          ),
        );
        await denied('primary', ns, 'write another namespace', (s) => s.putIfAbsent(o.segment, PUT).then(() => undefined));
        await denied('primary', ns, 'list another namespace', (s) => drain(s.list(namespacePrefix(other))));

        await denied('standby', ns, 'archive', (s) => s.putIfAbsent(k.segment, PUT).then(() => undefined));
        await denied('standby', ns, 'write the identity', (s) => s.putIfAbsent(k.identity, PUT).then(() => undefined));
        await denied('standby', ns, 'delete history', (s) => s.deleteMany([k.history]));
        await denied('standby', ns, 'delete the identity', (s) => s.deleteMany([k.identity]));
        await denied('standby', ns, 'write a streamed chunk', (s) => s.putIfAbsent(k.chunk, PUT).then(() => undefined));
        await denied('standby', ns, 'delete a streamed chunk', (s) => s.deleteMany([k.chunk]));
        await denied('standby', ns, "read another namespace's chunks", (s) =>
          s.get(o.chunk).then(
            () => undefined,
            () => undefined,
          ),
        );
        await denied('standby', ns, 'read another namespace', (s) =>
          s.get(o.segment).then(
            () => undefined,
            () => undefined,
          ),
        );
        if (!cleanup) await denied('standby', ns, 'delete WAL', (s) => s.deleteMany([k.segment]));
        if (!clear) await denied('standby', ns, 'delete triggers', (s) => s.deleteMany([k.triggerAll]));

        await denied('operator', ns, 'read WAL', (s) =>
          s.get(k.segment).then(
            () => undefined,
            () => undefined,
          ),
        );
        await denied('operator', ns, 'read streamed chunks', (s) =>
          s.get(k.chunk).then(
            () => undefined,
            () => undefined,
          ),
        );
        await denied('operator', ns, 'archive', (s) => s.putIfAbsent(k.segment, PUT).then(() => undefined));
        await denied('operator', ns, 'delete WAL', (s) => s.deleteMany([k.segment]));
        await denied('operator', ns, "trigger another namespace's failover", (s) => s.putIfAbsent(o.triggerAll, PUT).then(() => undefined));
      }
    });

    it("lets the primary delete streamed chunks and check's probes only, and gives no resource outside the bucket and its key", async () => {
      for (const encryption of ['SSE-S3', 'SSE-KMS']) {
        const ev = await evaluatorFor({ prefix, encryption });
        for (const actor of ['primary', 'standby', 'operator']) {
          for (const [ns, doc] of await ev.instances(`aws_iam_policy_document.${actor}`, 'data')) {
            const deletes: string[] = [];
            let denies = 0;
            for (const s of statements(doc)) {
              if (s.effect === 'Deny') {
                // Only the primary's deny of overwriting what it archives (s3:PutObject, on exactly those keys).
                denies++;
                expect(actor, `${actor} ${String(ns)} denies`).toBe('primary');
                expect(s.actions).toEqual(['s3:PutObject']);
                expect(s.resources).toEqual(archiveResources(prefix, String(ns)));
                continue;
              }
              expect(s.effect, `${actor} ${String(ns)}`).toBe('Allow');
              for (const a of s.actions) expect(a, `${actor} ${String(ns)}`).toMatch(/^(s3|kms):[A-Za-z]+$/);
              if (actor === 'primary' && s.actions.some((a) => /delete/i.test(a))) {
                // Exactly s3:DeleteObject (no DeleteObjectVersion), on exactly the stream/ prefix (with primary_stream) and check/'s.
                expect(
                  s.actions.filter((a) => /delete/i.test(a)),
                  `primary ${String(ns)}`,
                ).toEqual(['s3:DeleteObject']);
                deletes.push(...s.resources);
              }
              for (const r of s.resources) {
                const inBucket = r === BUCKET_ARN || (r.startsWith(`${BUCKET_ARN}/`) && r.length > BUCKET_ARN.length + 2);
                expect(inBucket || (encryption === 'SSE-KMS' && r === KMS_ARN), `${actor} ${String(ns)} resource ${r}`).toBe(true);
                if (r.startsWith(`${BUCKET_ARN}/`))
                  expect(r.slice(BUCKET_ARN.length + 1).startsWith(joinKey(prefix, namespacePrefix(String(ns)))), r).toBe(true);
              }
            }
            if (actor === 'primary') {
              const where = ns === 'Orders.v2_b-1' ? [checkPrefix] : [streamPrefix, checkPrefix];
              expect(deletes, `primary ${String(ns)} deletes streamed chunks and check probes`).toEqual(
                where.map((p) => `${BUCKET_ARN}/${joinKey(prefix, p(String(ns)))}*`),
              );
            }
            expect(denies, `${actor} ${String(ns)} denies`).toBe(actor === 'primary' ? 1 : 0);
          }
        }
      }
    });

    it.each(['SSE-S3', 'SSE-KMS'])('lets the primary create WAL, history and identity.json only if absent, never overwrite them (%s)', async (encryption) => {
      const ev = await evaluatorFor({ prefix, encryption });
      const [bucketDoc] = (await ev.instances('aws_iam_policy_document.bucket', 'data')).values();
      const bucketPolicy = statements(bucketDoc!);
      const primaryDocs = await ev.instances('aws_iam_policy_document.primary', 'data');
      const operatorDocs = await ev.instances('aws_iam_policy_document.operator', 'data');
      /** Another policy on the same principal that lets it write anything in the bucket (policy_arns on a role of your own). */
      const broad: Statement = { effect: 'Allow', actions: ['s3:*'], resources: [`${BUCKET_ARN}/*`], conditions: [] };
      const full = (key: string) => joinKey(prefix, key);
      const put = (key: string, IfNoneMatch?: string) => new PutObjectCommand({ Bucket: BUCKET, Key: full(key), Body: 'x', IfNoneMatch });
      const multipart = (key: string, IfNoneMatch?: string) => [
        new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: full(key) }),
        new UploadPartCommand({ Bucket: BUCKET, Key: full(key), UploadId: 'u', PartNumber: 1, Body: 'x' }),
        new CompleteMultipartUploadCommand({
          Bucket: BUCKET,
          Key: full(key),
          UploadId: 'u',
          IfNoneMatch,
          MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"e"' }] },
        }),
      ];
      const verdicts = async (policy: readonly Statement[], commands: readonly unknown[]) =>
        (await commandRequests(commands)).map(
          (r) => `${r.operation} ${r.resource.slice(BUCKET_ARN.length + 1)}: ${s3Allowed(policy, bucketPolicy, r) ? 'allowed' : 'denied'}`,
        );

      for (const ns of NAMESPACE_NAMES) {
        const primary = statements(primaryDocs.get(ns)!);
        const k = keysOf(ns);

        // What the driver really sends, single requests and a multipart upload alike, is allowed.
        const sent = await s3Requests(prefix, ACTOR_OPERATIONS.primary(ns));
        expect([...new Set(sent.flatMap((r) => r.operation ?? []))].sort(), ns).toEqual([
          'CompleteMultipartUpload',
          'CreateMultipartUpload',
          'PutObject',
          'UploadPart',
        ]);
        expect(sent.filter((r) => r.operation === 'UploadPart').length, ns).toBe(Math.ceil(BIG_BODY.length / PART_BYTES));
        expect(
          sent.filter((r) => !s3Allowed(primary, bucketPolicy, r)),
          ns,
        ).toEqual([]);
        // So is aborting an upload that failed.
        expect(await verdicts(primary, [new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: full(k.segment), UploadId: 'u' })]), ns).toEqual([
          `AbortMultipartUpload ${full(k.segment)}: allowed`,
        ]);

        for (const key of [k.identity, k.segment, k.partial, k.backup, k.history]) {
          const created = [put(key, '*'), ...multipart(key, '*')];
          const expected = (verdict: string) =>
            ['PutObject', 'CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload'].map((o) => `${o} ${full(key)}: ${verdict}`);
          expect(await verdicts(primary, created), key).toEqual(expected('allowed'));
          // Without If-None-Match, a PutObject or a multipart completion would replace an archived file.
          expect(await verdicts(primary, [put(key), ...multipart(key)]), key).toEqual([
            `PutObject ${full(key)}: denied`,
            `CreateMultipartUpload ${full(key)}: allowed`,
            `UploadPart ${full(key)}: allowed`,
            `CompleteMultipartUpload ${full(key)}: denied`,
          ]);
          // Each half holds alone: the allows grant nothing more without the deny...
          expect(
            await verdicts(
              primary.filter((st) => st.effect === 'Allow'),
              [put(key), ...multipart(key)],
            ),
            key,
          ).toEqual([
            `PutObject ${full(key)}: denied`,
            `CreateMultipartUpload ${full(key)}: allowed`,
            `UploadPart ${full(key)}: allowed`,
            `CompleteMultipartUpload ${full(key)}: denied`,
          ]);
          // ...and the explicit deny holds even where another policy allows every write.
          expect(await verdicts([...primary, broad], [put(key), ...multipart(key)]), key).toEqual([
            `PutObject ${full(key)}: denied`,
            `CreateMultipartUpload ${full(key)}: allowed`,
            `UploadPart ${full(key)}: allowed`,
            `CompleteMultipartUpload ${full(key)}: denied`,
          ]);
          expect(await verdicts([...primary, broad], created), key).toEqual(expected('allowed'));
        }

        // Streamed chunks keep their plain grant (the streamer deletes them anyway), where walbridge
        // stream runs, and the operator still replaces trigger objects as it likes: the deny reaches neither.
        const streams = ns !== 'Orders.v2_b-1';
        expect(await verdicts(primary, [put(k.chunk), put(k.chunk, '*'), ...multipart(k.chunk)]), ns).toEqual(
          ['PutObject', 'PutObject', 'CreateMultipartUpload', 'UploadPart', 'CompleteMultipartUpload'].map(
            (o) => `${o} ${full(k.chunk)}: ${streams ? 'allowed' : 'denied'}`,
          ),
        );
        expect(await verdicts([...primary, broad], [put(k.triggerAll)]), ns).toEqual([`PutObject ${full(k.triggerAll)}: allowed`]);
        expect(await verdicts(statements(operatorDocs.get(ns)!), [put(k.triggerAll), put(k.triggerAll, '*')]), ns).toEqual([
          `PutObject ${full(k.triggerAll)}: allowed`,
          `PutObject ${full(k.triggerAll)}: allowed`,
        ]);
      }
    });
  });

  it('creates roles where a trust policy is given, and attaches the matching policy', async () => {
    const trust = JSON.stringify({ Version: '2012-10-17', Statement: [] });
    const ev = await evaluatorFor({ namespaces: { db1: { trust_policies: { standby: trust } }, db2: {} } });
    const roles = await ev.instances('aws_iam_role.this');
    expect([...roles.keys()]).toEqual(['db1/standby']);
    expect(roles.get('db1/standby')).toMatchObject({ name: 'walbridge-db1-standby', assume_role_policy: trust });
    const policies = await ev.instances('aws_iam_policy.this');
    expect([...policies.keys()].sort()).toEqual(['db1/operator', 'db1/primary', 'db1/standby', 'db2/operator', 'db2/primary', 'db2/standby']);
    await expect(validates(mod, { bucket_name: BUCKET, namespaces: { db1: { trust_policies: { primary: 'not json' } } } })).resolves.toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// GCS: lifecycle, and IAM bindings simulated with their conditions.
// ---------------------------------------------------------------------------------------------

interface GcsBinding {
  readonly role: string;
  readonly member: string;
  readonly expression: string | null;
}

/** The only forms of condition the module writes, joined by ||. */
function celAllows(expression: string, resource: { type: string; name: string }): boolean {
  return expression.split(' || ').some((clause) => {
    let m = /^resource\.name\.startsWith\(("(?:[^"\\]|\\.)*")\)$/.exec(clause);
    if (m) return resource.name.startsWith(JSON.parse(m[1]!) as string);
    m = /^resource\.name == ("(?:[^"\\]|\\.)*")$/.exec(clause);
    if (m) return resource.name === JSON.parse(m[1]!);
    m = /^resource\.type == ("(?:[^"\\]|\\.)*")$/.exec(clause);
    if (m) return resource.type === JSON.parse(m[1]!);
    throw new Error(`condition clause not simulated: ${clause}`);
  });
}

describe('module gcs', () => {
  const mod = new Module(MODULES.gcs);
  const stubs = stubsFor('gcs');
  const sa = (name: string) => `serviceAccount:${name}@${PROJECT}.iam.gserviceaccount.com`;
  const namespaces = {
    db1: { wal_retention_days: 14, primary_stream: true, members: { primary: [sa('pg-a')], standby: [sa('pg-b')], operator: ['group:dba@example.com'] } },
    // pg-b is also the primary of db10 (a promoted standby); db10's accounts are created too.
    db10: {
      standby_cleanup: true,
      standby_trigger_clear: false,
      stream_retention_days: 2,
      primary_stream: true,
      members: { primary: [sa('pg-b')], standby: [sa('pg-c')] },
      service_account_prefix: 'db10',
    },
    'Orders.v2_b-1': {
      wal_retention_days: 0,
      stream_retention_days: 0,
      members: { primary: [sa('pg-d')], standby: [sa('pg-e')], operator: ['group:dba@example.com'] },
    },
  };
  const base = { project: PROJECT, location: 'EU', bucket_name: BUCKET, namespaces };
  const evaluatorFor = async (inputs: Record<string, Value>) => new Evaluator(mod, await variablesFor(mod, { ...base, ...inputs }), stubs);

  it('has uniform bucket-level access, prevents public access, and uses the CMEK key given', async () => {
    const [bucket] = (await (await evaluatorFor({})).instances('google_storage_bucket.this')).values();
    expect(bucket).toMatchObject({ uniform_bucket_level_access: true, public_access_prevention: 'enforced', name: BUCKET, project: PROJECT });
    expect(bucket!['encryption']).toBeUndefined();
    const key = 'projects/p/locations/europe/keyRings/r/cryptoKeys/k';
    const ev = await evaluatorFor({ kms_key_name: key });
    const [withKey] = (await ev.instances('google_storage_bucket.this')).values();
    expect(withKey).toMatchObject({ encryption: [{ default_kms_key_name: key }] });
    expect((await ev.instances('google_kms_crypto_key_iam_member.storage_agent')).size).toBe(1);
    await expect(validates(mod, { ...base, kms_key_name: 'k' }, 'kms_key_name')).resolves.toBe(false);
  });

  describe.each(PREFIXES)('with prefix %j', (prefix) => {
    it.each([false, true])("deletes live objects only under WAL, stream and check's prefixes (versioning %s)", async (versioning) => {
      const ev = await evaluatorFor({ prefix, versioning });
      const [bucket] = (await ev.instances('google_storage_bucket.this')).values();
      const rules = arr(bucket!['lifecycle_rule'], 'lifecycle_rule').map((r) => {
        const rule = obj(r, 'rule');
        return { action: obj(arr(rule['action'], 'action')[0], 'action'), condition: obj(arr(rule['condition'], 'condition')[0], 'condition') };
      });
      const liveDeletes = rules.filter((r) => r.action['type'] === 'Delete' && r.condition['with_state'] !== 'ARCHIVED');
      expect(liveDeletes.map((r) => [r.condition['matches_prefix'], r.condition['age']]).sort()).toEqual(
        [
          [[joinKey(prefix, walPrefix('db1'))], 14],
          [[joinKey(prefix, streamPrefix('db1'))], 7],
          [[joinKey(prefix, streamPrefix('db10'))], 2],
          ...NAMESPACE_NAMES.map((ns) => [[joinKey(prefix, checkPrefix(ns))], 1]),
        ].sort(),
      );
      const deleted = (key: string) =>
        liveDeletes.some((r) => arr(r.condition['matches_prefix'], 'matches_prefix').some((p) => joinKey(prefix, key).startsWith(str(p, 'prefix'))));
      for (const key of [keysOf('db1').chunk, keysOf('db10').chunk]) expect(deleted(key), key).toBe(true);
      for (const key of [keysOf('db10').segment, keysOf('Orders.v2_b-1').chunk]) expect(deleted(key), key).toBe(false);
      for (const ns of NAMESPACE_NAMES) {
        const k = keysOf(ns);
        for (const key of [k.identity, k.history, k.triggerAll]) {
          for (const r of liveDeletes) {
            for (const p of arr(r.condition['matches_prefix'], 'matches_prefix')) expect(joinKey(prefix, key).startsWith(str(p, 'prefix')), key).toBe(false);
          }
        }
      }
      const byType = (type: string) => rules.filter((r) => r.action['type'] === type).map((r) => r.condition['matches_prefix']);
      const namespaceRoots = NAMESPACE_NAMES.map((ns) => [joinKey(prefix, namespacePrefix(ns))]).sort();
      expect(byType('AbortIncompleteMultipartUpload').sort()).toEqual(namespaceRoots);
      // With versioning: noncurrent versions after noncurrent_version_retention_days, deleted chunks' after a day.
      const archived = rules
        .filter((r) => r.condition['with_state'] === 'ARCHIVED')
        .map((r) => [r.condition['matches_prefix'], r.condition['days_since_noncurrent_time']]);
      const streamRoots = NAMESPACE_NAMES.map((ns) => [[joinKey(prefix, streamPrefix(ns)), joinKey(prefix, checkPrefix(ns))], 1]);
      expect(archived.sort()).toEqual(versioning ? [...namespaceRoots.map((p) => [p, 30]), ...streamRoots].sort() : []);
    });

    it('lets each actor do what its commands do, and no more', async () => {
      const ev = await evaluatorFor({ prefix });
      const roles = obj(await ev.local('custom_roles'), 'custom_roles');
      const roleNames = obj(await ev.local('role_names'), 'role_names');
      const permissions = new Map(Object.entries(roleNames).map(([kind, n]) => [n, arr(obj(roles[kind], kind)['permissions'], 'permissions')]));
      expect(Object.fromEntries(permissions)).toEqual({
        [`projects/${PROJECT}/roles/walbridge.objectList`]: ['storage.objects.list'],
        [`projects/${PROJECT}/roles/walbridge.objectRead`]: ['storage.objects.get'],
        [`projects/${PROJECT}/roles/walbridge.objectCreate`]: ['storage.objects.create'],
        [`projects/${PROJECT}/roles/walbridge.objectDelete`]: ['storage.objects.delete'],
      });
      const bindings: GcsBinding[] = [];
      for (const b of (await ev.instances('google_storage_bucket_iam_member.objects')).values()) {
        expect(b['bucket']).toBe(BUCKET);
        const condition = obj(arr(b['condition'], 'condition')[0], 'condition');
        expect(str(condition['title'], 'title').length).toBeLessThanOrEqual(100);
        bindings.push({ role: str(b['role'], 'role'), member: str(b['member'], 'member'), expression: str(condition['expression'], 'expression') });
      }
      const listers = [...(await ev.instances('google_storage_bucket_iam_member.list')).values()];
      for (const b of listers) {
        expect(b['condition']).toBeUndefined();
        bindings.push({ role: str(b['role'], 'role'), member: str(b['member'], 'member'), expression: null });
      }
      expect(new Set(listers.map((b) => b['member'])).size, 'one list binding per principal').toBe(listers.length);

      const object = (key: string) => ({ type: 'storage.googleapis.com/Object', name: `projects/_/buckets/${BUCKET}/objects/${joinKey(prefix, key)}` });
      const bucket = { type: 'storage.googleapis.com/Bucket', name: `projects/_/buckets/${BUCKET}` };
      const allowed = (member: string, permission: string, resource: { type: string; name: string }) =>
        bindings.some(
          (b) => b.member === member && (permissions.get(b.role) ?? []).includes(permission) && (b.expression === null || celAllows(b.expression, resource)),
        );

      const created = (ns: string, actor: string) => `serviceAccount:${ns}-${actor}@${PROJECT}.iam.gserviceaccount.com`;
      const actors = {
        db1: { primary: [sa('pg-a')], standby: [sa('pg-b')], operator: ['group:dba@example.com'] },
        db10: { primary: [sa('pg-b'), created('db10', 'primary')], standby: [sa('pg-c'), created('db10', 'standby')], operator: [created('db10', 'operator')] },
        'Orders.v2_b-1': { primary: [sa('pg-d')], standby: [sa('pg-e')], operator: ['group:dba@example.com'] },
      };
      for (const [ns, members] of Object.entries(actors)) {
        const k = keysOf(ns);
        const o = keysOf(ns === 'db1' ? 'db10' : 'db1');
        const cleanup = ns === 'db10';
        const clear = ns !== 'db10';
        // pg-b is both db1's standby and db10's primary: what one role forbids, the other may allow.
        const shared = sa('pg-b');
        for (const m of members.primary) {
          for (const key of [k.identity, k.segment, k.partial, k.backup, k.history]) {
            expect(allowed(m, 'storage.objects.create', object(key)), `${m} creates ${key}`).toBe(true);
            expect(allowed(m, 'storage.objects.get', object(key)), `${m} reads ${key}`).toBe(true);
          }
          expect(allowed(m, 'storage.objects.create', object(k.triggerAll)), `${m} writes a trigger`).toBe(false);
          expect(allowed(m, 'storage.objects.create', object(`${k.identity}.x`)), `${m} creates beside identity.json`).toBe(false);
          // walbridge stream (primary_stream): lists, creates, reads and deletes chunks; deletes nothing else.
          // Every primary lists (walbridge check reads the namespace).
          expect(allowed(m, 'storage.objects.list', bucket), `${m} lists`).toBe(true);
          for (const p of ['storage.objects.create', 'storage.objects.get', 'storage.objects.delete']) {
            expect(allowed(m, p, object(k.chunk)), `${m} ${p} ${k.chunk}`).toBe(ns !== 'Orders.v2_b-1');
            if (p !== 'storage.objects.get' || m !== shared) expect(allowed(m, p, object(o.chunk)), `${m} ${p} ${o.chunk}`).toBe(false);
          }
          for (const key of nearStream(ns)) expect(allowed(m, 'storage.objects.delete', object(key)), `${m} deletes ${key}`).toBe(false);
          // walbridge check: creates its probe and deletes it again, in its own namespace only.
          for (const p of ['storage.objects.create', 'storage.objects.delete']) {
            expect(allowed(m, p, object(k.probe)), `${m} ${p} ${k.probe}`).toBe(true);
            expect(allowed(m, p, object(o.probe)), `${m} ${p} ${o.probe}`).toBe(false);
          }
          if (m !== shared) {
            expect(allowed(m, 'storage.objects.get', object(o.identity)), `${m} reads another namespace`).toBe(false);
            for (const [kind, key] of Object.entries(k))
              if (kind !== 'chunk' && kind !== 'probe') expect(allowed(m, 'storage.objects.delete', object(key)), `${m} deletes ${key}`).toBe(false);
          }
          expect(allowed(m, 'storage.objects.create', object(o.segment)), `${m} writes another namespace`).toBe(false);
        }
        for (const m of members.standby) {
          expect(allowed(m, 'storage.objects.list', bucket), `${m} lists`).toBe(true);
          for (const key of Object.values(k)) expect(allowed(m, 'storage.objects.get', object(key)), `${m} reads ${key}`).toBe(true);
          for (const key of [k.segment, k.partial, k.backup]) expect(allowed(m, 'storage.objects.delete', object(key)), `${m} cleans up ${key}`).toBe(cleanup);
          for (const key of [k.triggerAll, k.triggerStandby]) expect(allowed(m, 'storage.objects.delete', object(key)), `${m} clears ${key}`).toBe(clear);
          for (const key of [k.history, k.identity, k.chunk, k.probe])
            expect(allowed(m, 'storage.objects.delete', object(key)), `${m} deletes ${key}`).toBe(false);
          for (const key of Object.values(k)) expect(allowed(m, 'storage.objects.create', object(key)), `${m} creates ${key}`).toBe(false);
          if (m !== shared) expect(allowed(m, 'storage.objects.get', object(o.segment)), `${m} reads another namespace`).toBe(false);
        }
        for (const m of members.operator) {
          expect(allowed(m, 'storage.objects.list', bucket), `${m} lists`).toBe(true);
          for (const p of ['storage.objects.create', 'storage.objects.get', 'storage.objects.delete']) {
            expect(allowed(m, p, object(k.triggerAll)), `${m} ${p} trigger`).toBe(true);
            expect(allowed(m, p, object(k.segment)), `${m} ${p} WAL`).toBe(false);
            expect(allowed(m, p, object(k.chunk)), `${m} ${p} streamed chunk`).toBe(false);
            expect(allowed(m, p, object(k.probe)), `${m} ${p} check probe`).toBe(false);
          }
        }
      }
    });
  });

  it.each(PREFIXES)("lets the primary delete streamed chunks and check's probes only (prefix %j)", async (prefix) => {
    const ev = await evaluatorFor({ prefix });
    const roles = obj(await ev.local('custom_roles'), 'custom_roles');
    const grants = obj(await ev.local('grants'), 'grants');
    for (const [ns, actors] of Object.entries(grants)) {
      const primary = arr(obj(actors, ns)['primary'], 'primary').map((g) => obj(g, 'grant'));
      expect(primary.length).toBeGreaterThan(0);
      const deletes = primary.filter((g) => arr(obj(roles[str(g['role'], 'role')], 'role')['permissions'], 'permissions').includes('storage.objects.delete'));
      // One grant each, conditioned on exactly the check/ and (with primary_stream) stream/ prefixes (layout.ts), and nothing else.
      expect(
        deletes.map((g) => g['expression']),
        ns,
      ).toEqual(
        (ns === 'Orders.v2_b-1' ? [checkPrefix(ns)] : [checkPrefix(ns), streamPrefix(ns)]).map(
          (p) => `resource.name.startsWith(${JSON.stringify(`projects/_/buckets/${BUCKET}/objects/${joinKey(prefix, p)}`)})`,
        ),
      );
    }
  });

  it('creates service accounts only where asked', async () => {
    const accounts = await (await evaluatorFor({})).instances('google_service_account.this');
    expect([...accounts.keys()].sort()).toEqual(['db10/operator', 'db10/primary', 'db10/standby']);
    expect(accounts.get('db10/operator')).toMatchObject({ account_id: 'db10-operator', project: PROJECT });
  });
});

// ---------------------------------------------------------------------------------------------
// Examples: complete root modules a DBA copies.
// ---------------------------------------------------------------------------------------------

describe.each(Object.entries(EXAMPLES))('example %s', (name, dir) => {
  const example = new Module(dir);
  const target = new Module(MODULES[name as keyof typeof MODULES]);
  const call = example.calls['walbridge'];
  const tfvars = parsed.get(path.join(dir, 'terraform.tfvars.example'));

  it('calls its module with inputs the module declares, giving every required one', () => {
    expect(call?.['source']).toBe(`../../modules/${name}`);
    const inputs = Object.keys(call ?? {}).filter((k) => !['source', 'depends_on', 'providers'].includes(k));
    expect(inputs.filter((i) => !(i in target.variables))).toEqual([]);
    const required = Object.entries(target.variables)
      .filter(([, v]) => !('default' in v))
      .map(([n]) => n);
    expect(required.filter((r) => !inputs.includes(r))).toEqual([]);
  });

  it('declares every var, local, resource and module it uses, describes them, and pins its provider', () => {
    const exprs = example.expressions();
    const refs = (re: RegExp) => new Set(exprs.flatMap((e) => [...e.matchAll(re)].map((m) => m[1]!)));
    expect([...refs(/\bvar\.([A-Za-z_][\w-]*)/g)].filter((v) => !(v in example.variables))).toEqual([]);
    expect([...refs(/\blocal\.([A-Za-z_][\w-]*)/g)].filter((l) => !(l in example.locals))).toEqual([]);
    expect([...refs(/(?<!data\.)\b((?:aws|google)_[a-z0-9_]+\.[A-Za-z_][\w-]*)/g)].filter((r) => !(r in example.resources))).toEqual([]);
    expect([...refs(/\bdata\.((?:aws|google)_[a-z0-9_]+\.[A-Za-z_][\w-]*)/g)].filter((r) => !(r in example.data))).toEqual([]);
    expect([...refs(/\bmodule\.([A-Za-z_][\w-]*)/g)].filter((m) => !(m in example.calls))).toEqual([]);
    for (const [v, body] of [...Object.entries(example.variables), ...Object.entries(example.outputs)]) {
      expect(typeof body['description'] === 'string' && body['description'].length > 10, `${v} has a description`).toBe(true);
    }
    expect(Object.keys(example.providers)).toEqual([name === 'aws-s3' ? 'aws' : 'google']);
    const pins = only(example.terraform.find((t) => t['required_providers'])?.['required_providers'], 'required_providers');
    const modulePins = only(only(target.files['versions.tf']?.['terraform'], 'terraform')['required_providers'], 'required_providers');
    expect(pins).toEqual(modulePins);
  });

  it('has a terraform.tfvars.example setting declared variables, every required one', () => {
    expect(tfvars).toBeDefined();
    const keys = Object.keys(tfvars ?? {});
    expect(keys.filter((k) => !(k in example.variables))).toEqual([]);
    const required = Object.entries(example.variables)
      .filter(([, v]) => !('default' in v))
      .map(([n]) => n);
    expect(required.filter((r) => !keys.includes(r))).toEqual([]);
  });

  it('passes the module validations with the values of terraform.tfvars.example', async () => {
    const stubs: Stubs = name === 'aws-s3' ? { 'data.aws_iam_policy_document.operator_trust': [{ json: '{"Version":"2012-10-17","Statement":[]}' }] } : {};
    const ev = new Evaluator(example, await variablesFor(example, (await new Evaluator(example, {}).json(tfvars ?? {})) as Record<string, Value>), stubs);
    await expect(problems(example, obj(await ev.json(tfvars ?? {}), 'tfvars'))).resolves.toEqual([]);
    const inputs: Record<string, Value> = {};
    for (const [k, v] of Object.entries(call ?? {})) if (k in target.variables) inputs[k] = await ev.json(v);
    await expect(problems(target, inputs)).resolves.toEqual([]);
    const namespaces = obj(inputs['namespaces'], 'namespaces');
    expect(Object.keys(namespaces).length).toBeGreaterThan(0);
  });
});

describe("the modules' READMEs", () => {
  it.each(Object.entries(MODULES))('modules/%s/README.md names every input and output, and what is required', (_name, dir) => {
    const mod = new Module(dir);
    const readme = readFileSync(path.join(dir, 'README.md'), 'utf8');
    for (const [name, v] of Object.entries(mod.variables)) {
      const row = readme.split('\n').find((l) => l.startsWith(`| \`${name}\` |`));
      expect(row, `input ${name}`).toBeDefined();
      expect(row!.endsWith('| required |'), `input ${name}: required exactly when it has no default`).toBe(!('default' in v));
    }
    for (const name of Object.keys(mod.outputs)) expect(readme, `output ${name}`).toContain(`| \`${name}\` |`);
    for (const key of ['wal_retention_days', 'stream_retention_days', 'primary_stream', 'standby_cleanup', 'standby_trigger_clear'])
      expect(readme, `namespaces.${key}`).toContain(key);
  });
});

/** Whether the terraform binary is on PATH: `terraform fmt` needs no provider, so it runs wherever terraform is installed. */
const terraformInstalled = spawnSync('terraform', ['version'], { stdio: 'ignore', env: { ...process.env, TF_CLI_CONFIG_FILE: '/dev/null' } }).status === 0;

describe('formatting', () => {
  it.skipIf(!terraformInstalled)('every .tf file is as terraform fmt writes it', () => {
    const checked = spawnSync('terraform', ['fmt', '-check', '-recursive', '-diff', TERRAFORM], {
      encoding: 'utf8',
      env: { ...process.env, TF_CLI_CONFIG_FILE: '/dev/null' },
    });
    expect(checked.stdout, 'run "terraform fmt -recursive terraform"').toBe('');
    expect(checked.status).toBe(0);
  });
});
