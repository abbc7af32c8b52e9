// The conformance suite's fourth client: the official TypeScript SDK (@agentuity/core, the version
// the official CLI depends on) driving mockcloud. One process per command: argv is the words after
// `cloud sandbox`, as for the other runners. Each operation the SDK has is done through
// SandboxClient / SandboxInstance / the SDK's service functions (every answer parsed by its zod
// schemas), and its result printed as the official CLI's `--json` output of that command, so
// results compare with the other runners. SDK-only operations are `sdk <op> ...` (scenarios/sdk.yaml).
//
// Exit codes: 0 done; the command's exit code for exec; 70 the SDK rejected an answer (a zod
// error: a wrong wire shape) or failed otherwise; 198 the API answered an error envelope (status
// and message on stderr; the SDK has no CLI error format, so the runner prints the error with
// localsb, whose format the scenarios know); 199 this command or option is not an SDK operation
// (the runner runs it with localsb instead). `sdk ...` operations print API errors themselves, exit 1.
//
// usage: node sdk_client.mjs <core dist index.js> <words after `cloud sandbox`...>
const [, , coreIndex, ...argv] = process.argv;
const core = await import(coreIndex);
const { SandboxClient, APIClient } = core;

const UNSUPPORTED = 199;
class Unsupported extends Error {}

function env(name) { const v = process.env[name]; return v === undefined || v === '' ? undefined : v; }
const orgId = env('AGENTUITY_CLOUD_ORG_ID');
const apiKey = env('AGENTUITY_API_KEY');
const url = env('AGENTUITY_CATALYST_URL');
const client = new SandboxClient({ apiKey, url, orgId });
const logger = core.createMinimalLogger();
const api = new APIClient(url, logger, apiKey ?? '', { maxRetries: 0 });

// --- argv ----------------------------------------------------------------------------------------
function parse(words, spec) {
	// spec: {flags: [names], options: {name: 'one'|'many'}, positional: n}
	const out = { _: [], json: false, rest: null };
	for (let i = 0; i < words.length; i++) {
		const w = words[i];
		if (w === '--') { out.rest = words.slice(i + 1); break; }
		if (w === '--json') { out.json = true; continue; }
		if (w.startsWith('--')) {
			let [name, value] = w.slice(2).split(/=(.*)/s, 2);
			if ((spec.flags || []).includes(name)) { out[name] = true; continue; }
			const kind = (spec.options || {})[name];
			if (!kind) throw new Unsupported(`option --${name}`);
			if (value === undefined) value = words[++i];
			if (kind === 'many') (out[name] = out[name] || []).push(value); else out[name] = value;
			continue;
		}
		if (/^-[a-z]$/.test(w)) {
			const long = (spec.short || {})[w];
			if (!long) throw new Unsupported(`option ${w}`);
			out[long] = true;
			continue;
		}
		out._.push(w);
	}
	if (!out.json && !spec.human) throw new Unsupported('human output');
	return out;
}

function keyValues(list) {
	const env = {};
	for (const kv of list || []) { const i = kv.indexOf('='); env[kv.slice(0, i)] = kv.slice(i + 1); }
	return env;
}
const num = (v) => (v === undefined ? undefined : Number(v));
const clean = (o) => JSON.parse(JSON.stringify(o));   // drop undefined, as JSON.stringify does
function print(obj) { process.stdout.write(JSON.stringify(clean(obj), null, 2) + '\n'); }

async function readAll(stream) {
	const chunks = [];
	const reader = stream.getReader();
	for (;;) { const { done, value } = await reader.read(); if (done) break; chunks.push(Buffer.from(value)); }
	return Buffer.concat(chunks);
}

async function fetchText(u) {
	if (!u) return undefined;
	const sep = u.includes('?') ? '&' : '?';
	const resp = await fetch(`${u}${sep}v=2`);
	return await resp.text();
}

// --- commands --------------------------------------------------------------------------------------
const ALIASES = {
	new: 'create', show: 'get', info: 'get', ls: 'list', execute: 'exec',
	rm: 'delete', del: 'delete', remove: 'delete', destroy: 'delete', terminate: 'delete',
	hibernate: 'pause', suspend: 'pause', wake: 'resume', unpause: 'resume', event: 'events',
	files: 'fs', file: 'fs', snap: 'snapshot', snapshots: 'snapshot', ckpt: 'checkpoint',
	executions: 'execution', jobs: 'job', rt: 'runtime',
};
const SUB_ALIASES = {
	new: 'create', ls: 'list', dir: 'list', show: 'get', info: 'get', del: 'delete', rm: 'delete',
	remove: 'delete', stop: 'destroy', terminate: 'destroy',
};
const CREATE_OPTS = { name: 'one', description: 'one', env: 'many', metadata: 'one', memory: 'one', cpu: 'one',
	disk: 'one', 'idle-timeout': 'one', 'paused-timeout': 'one', runtime: 'one', snapshot: 'one',
	'project-id': 'one', port: 'one' };

const commands = {
	async create(words) {
		const a = parse(words, { options: CREATE_OPTS, flags: ['network'] });
		const options = clean({
			name: a.name, description: a.description, runtime: a.runtime, snapshot: a.snapshot,
			projectId: a['project-id'],
			env: a.env ? keyValues(a.env) : undefined,
			metadata: a.metadata ? JSON.parse(a.metadata) : undefined,
			resources: (a.memory || a.cpu || a.disk) ? clean({ memory: a.memory, cpu: a.cpu, disk: a.disk }) : undefined,
			network: a.port ? { enabled: true, port: Number(a.port) } : (a.network ? { enabled: true } : undefined),
			timeout: (a['idle-timeout'] || a['paused-timeout'])
				? clean({ idle: a['idle-timeout'], paused: a['paused-timeout'] }) : undefined,
		});
		const sb = await client.create(options);
		// SandboxInstance: the create answer's status; the URL comes from get (the CLI prints both)
		const info = a.port ? await sb.get() : undefined;
		print({ sandboxId: sb.id, status: sb.status, url: info?.url, stdoutStreamUrl: sb.stdoutStreamUrl,
			stderrStreamUrl: sb.stderrStreamUrl, auditStreamUrl: sb.auditStreamUrl });
	},
	async get(words) {
		const a = parse(words, {});
		const r = await client.get(a._[0]);
		print({ sandboxId: r.sandboxId, name: r.name, description: r.description, status: r.status,
			createdAt: r.createdAt, region: r.region, runtime: r.runtime, snapshot: r.snapshot,
			executions: r.executions, stdoutStreamUrl: r.stdoutStreamUrl, stderrStreamUrl: r.stderrStreamUrl,
			auditStreamId: r.auditStreamId, auditStreamUrl: r.auditStreamUrl, dependencies: r.dependencies,
			packages: r.packages, metadata: r.metadata, resources: r.resources, url: r.url });
	},
	async list(words) {
		const a = parse(words, { options: { name: 'one', mode: 'one', status: 'one', limit: 'one', offset: 'one',
			sort: 'one', direction: 'one' }, flags: ['all'] });
		const r = await core.cliSandboxList(api, clean({ name: a.name, mode: a.mode, status: a.status,
			orgId, limit: num(a.limit), offset: num(a.offset), sort: a.sort, direction: a.direction }));
		print({ sandboxes: r.sandboxes.map((s) => ({ id: s.id, name: s.name, description: s.description,
			status: s.status, createdAt: s.createdAt, region: s.region, orgId: s.orgId, orgName: s.orgName,
			projectId: s.projectId })), total: r.total });
	},
	async exec(words) {
		const a = parse(words, { options: { timeout: 'one' } });
		const sb = await client.connect(a._[0]);
		const started = await core.sandboxExecute(api, { sandboxId: sb.id, orgId,
			options: clean({ command: a.rest, timeout: a.timeout }) });
		const combined = started.stdoutStreamUrl && started.stdoutStreamUrl === started.stderrStreamUrl;
		const [out, err] = await Promise.all([fetchText(started.stdoutStreamUrl),
			combined ? undefined : fetchText(started.stderrStreamUrl)]);
		const fin = await core.executionGet(api, { executionId: started.executionId, orgId, wait: '5m' });
		print({ executionId: fin.executionId, status: fin.status, exitCode: fin.exitCode, durationMs: fin.durationMs,
			stdout: combined ? undefined : out, stderr: combined ? undefined : err,
			output: (out || '') + (err || ''), outputTruncated: fin.outputTruncated ?? undefined,
			autoResumed: started.autoResumed ?? undefined });
		if (fin.exitCode !== undefined && fin.exitCode !== 0) process.exitCode = fin.exitCode;
		else if (fin.exitCode === undefined && ['failed', 'error', 'timeout', 'killed'].includes(fin.status)) process.exitCode = 1;
	},
	async delete(words) {
		const a = parse(words, { flags: ['confirm'] });
		if (!a.confirm) throw new Unsupported('the confirmation prompt');
		const t0 = Date.now();
		await client.destroy(a._[0]);
		print({ success: true, sandboxId: a._[0], durationMs: Date.now() - t0 });
	},
	async pause(words) {
		const a = parse(words, {});
		const t0 = Date.now();
		const r = await client.pause(a._[0]);
		print({ success: true, sandboxId: a._[0], durationMs: Date.now() - t0, terminatesAt: r.terminatesAt });
	},
	async resume(words) {
		const a = parse(words, {});
		const t0 = Date.now();
		await client.resume(a._[0]);
		print({ success: true, sandboxId: a._[0], durationMs: Date.now() - t0 });
	},
	async env(words) {
		const a = parse(words, { options: { delete: 'many' }, short: {} });
		const set = {};
		for (const kv of a._.slice(1)) { const i = kv.indexOf('='); if (i < 1) throw new Unsupported('bad KEY=VALUE'); set[kv.slice(0, i)] = kv.slice(i + 1); }
		for (const k of a.delete || []) set[k] = null;
		if (!Object.keys(set).length) throw new Unsupported('nothing to set');
		const sb = await client.connect(a._[0]);
		print({ success: true, env: await sb.setEnv(set) });
	},
	async events(words) {
		const a = parse(words, { options: { limit: 'one' }, flags: ['reverse'] });
		const r = await client.listEvents(a._[0], clean({ limit: num(a.limit), direction: a.reverse ? 'desc' : undefined }));
		print({ events: r.events.map((e) => ({ eventId: e.eventId, sandboxId: e.sandboxId, type: e.type,
			event: e.event, createdAt: e.createdAt })) });
	},
	async execution(words) {
		const sub = SUB_ALIASES[words[0]] || words[0];
		const a = parse(words.slice(1), { options: { limit: 'one' } });
		if (sub === 'get') {
			const r = await client.getExecution(a._[0]);
			print({ executionId: r.executionId, sandboxId: r.sandboxId, status: r.status, command: r.command,
				exitCode: r.exitCode, durationMs: r.durationMs, startedAt: r.startedAt, completedAt: r.completedAt,
				error: r.error, stdoutStreamUrl: r.stdoutStreamUrl, stderrStreamUrl: r.stderrStreamUrl,
				outputTruncated: r.outputTruncated });
		} else if (sub === 'list') {
			const r = await client.listExecutions(a._[0], num(a.limit));
			print({ executions: r.executions.map((e) => ({ executionId: e.executionId, sandboxId: e.sandboxId,
				status: e.status, exitCode: e.exitCode, durationMs: e.durationMs, startedAt: e.startedAt,
				completedAt: e.completedAt, error: e.error })) });
		} else throw new Unsupported(`execution ${sub}`);
	},
	async job(words) {
		const sub = SUB_ALIASES[words[0]] || words[0];
		const a = parse(words.slice(1), { options: { limit: 'one' }, flags: ['force'] });
		if (sub === 'create') {
			print(await core.jobCreate(api, { sandboxId: a._[0], options: { command: a.rest }, orgId }));
		} else if (sub === 'get') {
			print(await core.jobGet(api, { sandboxId: a._[0], jobId: a._[1], orgId }));
		} else if (sub === 'list' && words[0] === 'list') {   // the official CLI has no `job ls`
			print(await client.listJobs(a._[0], num(a.limit)));
		} else if (sub === 'destroy') {
			print(await core.jobStop(api, { sandboxId: a._[0], jobId: a._[1], force: a.force || undefined, orgId }));
		} else throw new Unsupported(`job ${words[0]}`);
	},
	async checkpoint(words) {
		const sub = SUB_ALIASES[words[0]] || words[0];
		const a = parse(words.slice(1), { flags: ['confirm'] });
		if (sub === 'list') {
			const cps = await client.listDiskCheckpoints(a._[0]);
			print({ checkpoints: cps, total: cps.length });
		} else if (sub === 'create') {
			const t0 = Date.now();
			const c = await client.createDiskCheckpoint(a._[0], a._[1]);
			print({ success: true, sandboxId: a._[0], checkpointId: c.id, name: c.name, createdAt: c.createdAt,
				parent: c.parent, durationMs: Date.now() - t0 });
		} else if (sub === 'restore') {
			const t0 = Date.now();
			await core.diskCheckpointRestore(api, { sandboxId: a._[0], checkpointId: a._[1], orgId });
			print({ success: true, sandboxId: a._[0], checkpointId: a._[1], durationMs: Date.now() - t0 });
		} else throw new Unsupported(`checkpoint ${sub}`);
	},
	async snapshot(words) {
		const sub = SUB_ALIASES[words[0]] || words[0];
		const a = parse(words.slice(1), { options: { sandbox: 'one', limit: 'one', offset: 'one', sort: 'one',
			direction: 'one' }, flags: ['confirm'] });
		if (sub === 'list') {
			print(await client.listSnapshots(clean({ sandboxId: a.sandbox, limit: num(a.limit), offset: num(a.offset),
				sort: a.sort, direction: a.direction })));
		} else if (sub === 'get') {
			const s = await client.getSnapshot(a._[0]);
			const boxes = await core.sandboxList(api, { orgId, snapshotId: s.snapshotId });
			const attached = boxes.sandboxes.filter((b) => b.status === 'idle' || b.status === 'running')
				.map((b) => ({ sandboxId: b.sandboxId, status: b.status, createdAt: b.createdAt, executions: b.executions }));
			print({ ...s, sandboxes: attached });
		} else if (sub === 'delete' && a.confirm) {
			await client.deleteSnapshot(a._[0]);
			print({ success: true, snapshotId: a._[0] });
		} else throw new Unsupported(`snapshot ${sub}`);
	},
	async runtime(words) {
		const sub = SUB_ALIASES[words[0]] || words[0];
		const a = parse(words.slice(1), { options: { limit: 'one', offset: 'one', sort: 'one', direction: 'one' } });
		if (sub !== 'list') throw new Unsupported(`runtime ${sub}`);
		print(await client.listRuntimes(clean({ limit: num(a.limit), offset: num(a.offset), sort: a.sort,
			direction: a.direction })));
	},
	async fs(words) {
		const sub = SUB_ALIASES[words[0]] || words[0];
		const a = parse(words.slice(1), { flags: ['recursive', 'parents', 'long'],
			short: { '-r': 'recursive', '-p': 'parents', '-l': 'long' } });
		const sb = await client.connect(a._[0]);
		if (sub === 'list') {
			const files = await sb.listFiles(a._[1] ?? '.');
			print({ files, total: files.length });
		} else if (sub === 'mkdir') {
			await sb.mkDir(a._[1], !!a.parents);
			print({ success: true, path: a._[1] });
		} else if (sub === 'delete') {
			const r = await sb.rmFile(a._[1]);
			print({ success: true, path: a._[1], found: r.found });
		} else if (sub === 'rmdir') {
			const r = await sb.rmDir(a._[1], !!a.recursive);
			print({ success: true, path: a._[1], found: r.found });
		} else throw new Unsupported(`fs ${sub}`);
	},
	// SDK-only operations (routes the CLI never sends), printed as the SDK returns them
	async sdk(words) {
		const op = words[0];
		const a = parse(words.slice(1), { human: true, options: { limit: 'one', offset: 'one', status: 'one',
			name: 'one', 'snapshot-id': 'one', set: 'many', unset: 'many', path: 'one', format: 'one',
			'wait-for': 'one', 'wait-ms': 'one', text: 'one', timestamps: 'one' },
			flags: ['live', 'deleted-only', 'include-deleted', 'no-key'] });
		const id = a._[0];
		if (op === 'list') {
			const r = await core.sandboxList(api, clean({ orgId, live: a.live || undefined, deletedOnly: a['deleted-only'] || undefined,
				snapshotId: a['snapshot-id'], status: a.status, name: a.name, limit: num(a.limit), offset: num(a.offset) }));
			print({ total: r.total, sandboxes: r.sandboxes.map((s) => ({ sandboxId: s.sandboxId, status: s.status, name: s.name })) });
		} else if (op === 'get') {
			const r = await core.sandboxGet(api, { sandboxId: id, orgId, includeDeleted: a['include-deleted'] || undefined });
			print({ sandboxId: r.sandboxId, status: r.status, executions: r.executions });
		} else if (op === 'status') {
			print(await core.sandboxGetStatus(api, { sandboxId: id, orgId }));
		} else if (op === 'set-env') {
			const set = keyValues(a.set);
			for (const k of a.unset || []) set[k] = null;
			print(await core.sandboxSetEnv(api, { sandboxId: id, env: set, orgId }));
		} else if (op === 'public-snapshot') {
			const anon = new APIClient(url, logger, '', { maxRetries: 0 });
			const s = await core.snapshotPublicGet(anon, { snapshotRef: id });
			print({ snapshotId: s.snapshotId, name: s.name, public: s.public, fileCount: s.fileCount });
		} else if (op === 'public-snapshots') {
			const anon = new APIClient(url, logger, '', { maxRetries: 0 });
			const r = await core.snapshotPublicList(anon, clean({ limit: num(a.limit), offset: num(a.offset) }));
			print({ total: r.total, snapshots: r.snapshots.map((s) => s.snapshotId) });
		} else if (op === 'read-file') {
			const sb = await client.connect(id);
			process.stdout.write(await readAll(await sb.readFile(a.path)));
		} else if (op === 'exec-stream') {
			// execute with the output piped by the SDK (GET <stream url>?v=2), timestamps as asked
			const sb = await client.connect(id);
			const { Writable } = await import('node:stream');
			const out = [];
			const sink = new Writable({ write(c, _e, cb) { out.push(Buffer.from(c)); cb(); } });
			const r = await sb.execute({ command: a.rest, pipe: { stdout: sink, stderr: sink },
				stream: a.timestamps === undefined ? undefined : { timestamps: a.timestamps === 'true' } });
			print({ status: r.status, exitCode: r.exitCode, output: Buffer.concat(out).toString() });
		} else if (op === 'run') {
			// SandboxClient.run: create (oneshot) + streams + GET /sandbox/status/{id}
			const { Writable, Readable } = await import('node:stream');
			const out = [];
			const sink = new Writable({ write(c, _e, cb) { out.push(Buffer.from(c)); cb(); } });
			const io = { stdout: sink, stderr: sink };
			if (a.text !== undefined) io.stdin = Readable.from([Buffer.from(a.text)]);
			const r = await client.run({ command: { exec: a.rest } }, io);
			print({ exitCode: r.exitCode, output: Buffer.concat(out).toString() });
		} else if (op === 'upload-archive') {
			const fs = await import('node:fs');
			const sb = await client.connect(id);
			await core.sandboxUploadArchive(api, { sandboxId: sb.id, orgId, path: a.path ?? '.',
				archive: fs.readFileSync(a._[1]), format: a.format ?? 'tar.gz' });
			print({ success: true });
		} else if (op === 'download-archive') {
			const stream = await core.sandboxDownloadArchive(api, { sandboxId: id, orgId, path: a.path ?? '.',
				format: a.format ?? 'tar.gz' });
			const bytes = await readAll(stream);
			(await import('node:fs')).writeFileSync(a._[1], bytes);
			print({ success: true, bytes: bytes.length > 0 });
		} else if (op === 'job') {
			const j = await client.createJob(id, { command: a.rest });
			const deadline = Date.now() + 20000;
			let info = await j.get();
			while (!['completed', 'failed', 'cancelled'].includes(info.status) && Date.now() < deadline) {
				await new Promise((res) => setTimeout(res, 200));
				info = await j.get();
			}
			print({ status: info.status, exitCode: info.exitCode });
		} else {
			throw new Unsupported(`sdk ${op}`);
		}
	},
};

// --- main ------------------------------------------------------------------------------------------
const head = ALIASES[argv[0]] || argv[0];
try {
	const fn = commands[head];
	if (!fn) throw new Unsupported(`command ${argv[0]}`);
	await fn(argv.slice(1));
} catch (e) {
	if (e instanceof Unsupported) {
		process.stderr.write(`sdk-client: not an SDK operation: ${e.message}\n`);
		process.exit(UNSUPPORTED);
	}
	const name = e?.name || e?.constructor?.name || 'Error';
	const zod = name === 'ZodError' || /Validation|zod/i.test(name) || Array.isArray(e?.issues);
	process.stderr.write(JSON.stringify({ sdkError: { name, status: e?.status ?? e?._tag, message: String(e?.message ?? e),
		issues: e?.issues } }) + '\n');
	// the SDK's typed errors of an error envelope (SandboxBusyError, SandboxNotFoundError, ...)
	const apiError = !zod && (typeof e?.status === 'number' || /^(APIError|Sandbox|Execution|Snapshot)/.test(name));
	process.exit(apiError ? (head === 'sdk' ? 1 : 198) : 70);
}
