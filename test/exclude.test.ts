import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { DEFAULT_CAPTURE_EXCLUDES, DEFAULT_UPDATE_EXCLUDES, ExcludeList, readExcludeFile } from '../node/tree/exclude.ts'
import { ImgmeshError } from '../node/errors.ts'

/** The latin1 form of a path given as bytes, as callers build it. */
function p (...parts: Array<string | Buffer>): string {
  return Buffer.concat(parts.map(x => typeof x === 'string' ? Buffer.from(x, 'utf8') : x)).toString('latin1')
}

function check (patterns: string[], cases: Array<[string, boolean, boolean]>): void {
  const list = new ExcludeList(patterns)
  for (const [path, isDir, want] of cases) {
    assert.equal(list.excludes(path, isDir), want, `${JSON.stringify(patterns)} on ${path}${isDir ? '/' : ''}`)
  }
}

function isBadArg (err: unknown): boolean {
  return err instanceof ImgmeshError && err.code === 'EBADARG'
}

test('an empty list excludes nothing', () => {
  const list = new ExcludeList([])
  assert.equal(list.empty, true)
  assert.deepEqual(list.patterns, [])
  assert.equal(list.excludes('/etc/passwd', false), false)
  assert.equal(new ExcludeList(['x']).empty, false)
})

test('patterns keep what was given', () => {
  const given = ['/a', 'b/', '- c', '+ d']
  const list = new ExcludeList(given)
  assert.deepEqual(list.patterns, given)
  given.push('e')
  assert.equal(list.patterns.length, 4)
})

test('a leading / anchors at the root', () => {
  check(['/etc/hostname'], [
    ['/etc/hostname', false, true],
    ['/srv/etc/hostname', false, false],
    ['/etc/hostname.d', false, false],
    ['/etc', true, false]
  ])
  check(['/swapfile'], [['/swapfile', false, true], ['/data/swapfile', false, false]])
})

test('a pattern without / matches the last component at any depth', () => {
  check(['lost+found'], [
    ['/lost+found', true, true],
    ['/home/lost+found', true, true],
    ['/home/lost+found/file', false, true],
    ['/lost+found.txt', false, false],
    ['/xlost+found', true, false]
  ])
  check(['*.o'], [
    ['/src/a.o', false, true],
    ['/a.o', false, true],
    ['/src/a.o/x.c', false, true],
    ['/src/a.c', false, false],
    ['/src.o.d/a.c', false, false]
  ])
})

test('an inner / matches a trailing sequence of whole components', () => {
  check(['cache/apt'], [
    ['/var/cache/apt', true, true],
    ['/cache/apt', true, true],
    ['/var/cache/apt/pkgcache.bin', false, true],
    ['/var/xcache/apt', true, false],
    ['/var/cache/aptx', true, false],
    ['/var/cache', true, false]
  ])
})

test('a trailing / matches directories only', () => {
  check(['build/'], [
    ['/src/build', true, true],
    ['/src/build', false, false],
    ['/src/build/out.o', false, true]
  ])
  check(['/opt/scratch/'], [['/opt/scratch', true, true], ['/opt/scratch', false, false]])
})

test('* stays within one component', () => {
  check(['/var/log/*.log'], [
    ['/var/log/syslog.log', false, true],
    ['/var/log/.log', false, true],
    ['/var/log/apt/term.log', false, false],
    ['/var/log/syslog', false, false]
  ])
  check(['/etc/ssh/ssh_host_*'], [
    ['/etc/ssh/ssh_host_ed25519_key', false, true],
    ['/etc/ssh/ssh_host_ed25519_key.pub', false, true],
    ['/etc/ssh/sshd_config', false, false]
  ])
})

test('/dir/* excludes the contents but not the directory', () => {
  check(['/dev/*'], [
    ['/dev', true, false],
    ['/dev/null', false, true],
    ['/dev/pts', true, true],
    ['/dev/pts/0', false, true],
    ['/devices', true, false],
    ['/usr/dev/x', false, false]
  ])
})

test('** crosses components', () => {
  check(['/usr/**/__pycache__'], [
    ['/usr/lib/python3/__pycache__', true, true],
    ['/usr/lib/python3/dist/__pycache__', true, true],
    ['/usr/__pycache__', true, false],
    ['/opt/lib/__pycache__', true, false]
  ])
  check(['/var/lib/**.pid'], [
    ['/var/lib/a/b/c.pid', false, true],
    ['/var/lib/c.pid', false, true],
    ['/var/c.pid', false, false]
  ])
  check(['**/tmp'], [
    ['/a/tmp', true, true],
    ['/a/b/tmp', true, true],
    ['/tmp', true, false]
  ])
})

test('a trailing /*** matches the directory and everything in it', () => {
  check(['/srv/data/***'], [
    ['/srv/data', true, true],
    ['/srv/data/x', false, true],
    ['/srv/data/x/y', false, true],
    ['/srv/database', true, false],
    ['/srv', true, false]
  ])
})

test('? matches one byte but not /', () => {
  check(['/tmp/?'], [
    ['/tmp/a', false, true],
    ['/tmp/ab', false, false],
    ['/tmp/', true, false]
  ])
  check(['/a?b'], [['/a/b', false, false], ['/axb', false, true]])
  check(['/x?'], [[p('/x', Buffer.from([0xff])), false, true], [p('/x', 'é'), false, false]])
  check(['/x??'], [[p('/x', 'é'), false, true]])
})

test('character classes', () => {
  check(['/var/log/*.[0-9]'], [
    ['/var/log/syslog.1', false, true],
    ['/var/log/syslog.x', false, false],
    ['/var/log/syslog.10', false, false]
  ])
  check(['/f[!a-c]'], [['/fa', false, false], ['/fd', false, true], ['/f/', false, false]])
  check(['/f[^a-c]'], [['/fb', false, false], ['/fz', false, true]])
  check(['/f[]x]'], [['/f]', false, true], ['/fx', false, true], ['/fy', false, false]])
  check(['/f[a-]'], [['/f-', false, true], ['/fa', false, true], ['/fb', false, false]])
  check(['/f[[:digit:][:upper:]]'], [['/f7', false, true], ['/fQ', false, true], ['/fq', false, false]])
  check(['/f[[:space:]]'], [['/f ', false, true], ['/f\t', false, true], ['/f_', false, false]])
  check(['/a[/]b', '/c[!x]d'], [['/a/b', false, false], ['/c/d', false, false]])
  check(['/f[\\]]'], [['/f]', false, true]])
  check(['/f[.*]'], [['/f.', false, true], ['/f*', false, true], ['/fa', false, false]])
})

test('a backslash makes the next character literal', () => {
  check(['/a\\*b'], [['/a*b', false, true], ['/axb', false, false]])
  check(['/q\\?'], [['/q?', false, true], ['/qx', false, false]])
})

test('regex metacharacters in patterns are literal', () => {
  check(['/a.b', '/(x)', '/c+d', '/e|f', '/g$', '/^h', '/i{2}'], [
    ['/a.b', false, true],
    ['/axb', false, false],
    ['/(x)', false, true],
    ['/x', false, false],
    ['/c+d', false, true],
    ['/ccd', false, false],
    ['/e|f', false, true],
    ['/e', false, false],
    ['/g$', false, true],
    ['/^h', false, true],
    ['/i{2}', false, true],
    ['/ii', false, false]
  ])
})

test('non-UTF-8 bytes in paths are matched byte-wise', () => {
  const latin1Name = Buffer.from([0x63, 0x61, 0x66, 0xe9]) // "café" in ISO-8859-1
  check(['/data/*'], [[p('/data/', latin1Name), false, true]])
  check(['caf?'], [[p('/x/', latin1Name), false, true]])
  check(['café'], [
    [p('/x/', 'café'), false, true],
    [p('/x/', latin1Name), false, false]
  ])
  check(['*.bak'], [[p('/', Buffer.from([0xff, 0xfe, 0x2e, 0x62, 0x61, 0x6b])), false, true]])
  check(['/d/[[:alpha:]]'], [[p('/d/', Buffer.from([0xe9])), false, false], ['/d/e', false, true]])
  check(['*\n*'], [['/a\nb', false, true], ['/ab', false, false]])
  check(['/x/**'], [['/x/a\n/b', false, true]])
})

test('UTF-8 patterns match UTF-8 names', () => {
  check(['/home/*/Téléchargements/', '日本語.txt'], [
    [p('/home/zoé/Téléchargements'), true, true],
    [p('/docs/日本語.txt'), false, true],
    [p('/docs/日本.txt'), false, false]
  ])
  check(['/?'], [[p('/é'), false, false]])
})

test('+ rules include, first match wins, and excluded directories hide their contents', () => {
  check(['+ /dev/console', '- /dev/*'], [
    ['/dev/console', false, false],
    ['/dev/null', false, true],
    ['/dev', true, false]
  ])
  check(['- /var/*', '+ /var/lib'], [['/var/lib/x', false, true]])
  check(['+ /var/lib/', '/var/*'], [['/var/lib/x', false, false], ['/var/log', true, true]])
})

test('the root is never excluded; paths must start with /', () => {
  const list = new ExcludeList(['*', '/**'])
  assert.equal(list.excludes('/', true), false)
  assert.equal(list.excludes('/a', false), true)
  assert.throws(() => list.excludes('etc/passwd', false), isBadArg)
  assert.throws(() => list.excludes('', false), isBadArg)
})

test('bad patterns are EBADARG', () => {
  for (const bad of ['', '/', '//', '- ', '/a[bc', '[', '/a[', '/a[\\', '/x\\', '/f[z-a]', '/f[[:nope:]]', 'a\0b']) {
    assert.throws(() => new ExcludeList([bad]), isBadArg, JSON.stringify(bad))
  }
  assert.throws(() => new ExcludeList(['/ok', '/bad[']), (err: unknown) => isBadArg(err) && (err as Error).message.includes('/bad['))
})

test('matching agrees with a reference for simple anchored patterns', () => {
  const seg = fc.stringMatching(/^[a-c.]{1,3}$/)
  fc.assert(fc.property(fc.array(seg, { minLength: 1, maxLength: 4 }), fc.array(seg, { minLength: 1, maxLength: 4 }), (pat, path) => {
    const list = new ExcludeList(['/' + pat.join('/')])
    const want = path.length >= pat.length && pat.every((s, i) => s === path[i])
    assert.equal(list.excludes('/' + path.join('/'), false), want)
  }), { numRuns: 300 })
})

test('capture defaults exclude what they claim', () => {
  const list = new ExcludeList(DEFAULT_CAPTURE_EXCLUDES)
  const yes = [
    '/proc/1/status', '/proc/self', '/sys/class/net/eth0', '/dev/null', '/dev/pts/0', '/run/sshd.pid',
    '/tmp/x', '/var/tmp/y', '/mnt/usb/file', '/media/cdrom', '/lost+found', '/home/lost+found/#123',
    '/etc/udev/rules.d/70-persistent-net.rules', '/etc/udev/rules.d/70-persistent-cd.rules',
    '/var/lib/dhcp/dhclient.eth0.leases', '/var/lib/dhclient/dhclient.leases',
    '/var/cache/apt/archives/bash_5.2_amd64.deb', '/var/cache/apt/pkgcache.bin', '/swapfile',
    '/var/lib/imgmesh/blocks/AB/x.data', '/etc/machine-id', '/var/lib/systemd/random-seed',
    '/var/log/journal/0123/system.journal'
  ]
  for (const path of yes) assert.equal(list.excludes(path, false), true, path)
  const no = [
    '/proc', '/sys', '/dev', '/run', '/tmp', '/var/tmp', '/mnt', '/media', '/var/lib/imgmesh',
    '/usr/bin/ls', '/etc/passwd', '/etc/hostname', '/var/cache/apt/archives/lock', '/var/cache/apt/archives',
    '/etc/udev/rules.d/99-local.rules', '/var/lib/dhcp', '/var/log/dpkg.log', '/var/log/journal', '/boot/vmlinuz',
    '/etc/ssh/ssh_host_ed25519_key', '/home/user/.bashrc', '/root/.ssh/authorized_keys'
  ]
  for (const path of no) assert.equal(list.excludes(path, path.split('/').length < 4), false, path)
})

test('update defaults exclude what they claim', () => {
  const list = new ExcludeList(DEFAULT_UPDATE_EXCLUDES)
  const yes = [
    '/etc/fstab', '/etc/hostname', '/etc/hosts', '/etc/machine-id', '/etc/network/interfaces', '/etc/resolv.conf',
    '/etc/ssh/ssh_host_rsa_key', '/etc/ssh/ssh_host_rsa_key.pub', '/var/log/syslog', '/var/log/apt/history.log',
    '/home/user/x', '/home/user', '/root/.bash_history', '/tmp/a', '/var/tmp/b', '/proc/1/status', '/sys/kernel',
    '/dev/sda', '/run/lock', '/lost+found', '/var/lib/imgmesh/refs.json', '/boot/grub/grubenv', '/boot/efi/EFI/debian/grubx64.efi',
    '/var/spool/cron/crontabs/root'
  ]
  for (const path of yes) assert.equal(list.excludes(path, false), true, path)
  const no = [
    '/usr/bin/ls', '/etc/passwd', '/etc/ssh/sshd_config', '/home', '/root', '/var/log', '/boot', '/boot/vmlinuz-6.1.0-18-amd64',
    '/boot/grub/grub.cfg', '/lib/modules/6.1.0-18-amd64/modules.dep', '/etc/network', '/var/lib/dpkg/status', '/proc'
  ]
  for (const path of no) assert.equal(list.excludes(path, false), false, path)
})

test('node-local state left out of capture is kept by updates', () => {
  const capture = new ExcludeList(DEFAULT_CAPTURE_EXCLUDES)
  const update = new ExcludeList(DEFAULT_UPDATE_EXCLUDES)
  const caches = ['/var/cache/']
  const samples = [
    '/proc/x', '/sys/x', '/dev/x', '/run/x', '/tmp/x', '/var/tmp/x', '/mnt/x', '/media/x', '/lost+found', '/swapfile',
    '/swap.img', '/etc/machine-id', '/var/lib/dbus/machine-id', '/etc/udev/rules.d/70-persistent-net.rules',
    '/etc/udev/rules.d/70-persistent-cd.rules', '/var/lib/dhcp/a.leases', '/var/lib/dhclient/x', '/var/lib/NetworkManager/secret_key',
    '/var/lib/systemd/random-seed', '/var/lib/urandom/random-seed', '/var/log/journal/x', '/var/crash/x',
    '/var/lib/systemd/coredump/x', '/etc/lvm/cache/.cache', '/etc/lvm/backup/vg0', '/etc/lvm/archive/vg0_1.vg',
    '/var/lib/imgmesh/x', '/var/cache/apt/archives/a.deb', '/var/cache/apt/srcpkgcache.bin', '/var/cache/dnf/x', '/var/cache/yum/x'
  ]
  for (const path of samples) {
    assert.equal(capture.excludes(path, false), true, `capture ${path}`)
    if (caches.some(c => path.startsWith(c))) continue
    assert.equal(update.excludes(path, false), true, `update ${path}`)
  }
})

test('defaults compile and are frozen', () => {
  assert.ok(Object.isFrozen(DEFAULT_CAPTURE_EXCLUDES))
  assert.ok(Object.isFrozen(DEFAULT_UPDATE_EXCLUDES))
  assert.equal(new Set(DEFAULT_CAPTURE_EXCLUDES).size, DEFAULT_CAPTURE_EXCLUDES.length)
  assert.equal(new Set(DEFAULT_UPDATE_EXCLUDES).size, DEFAULT_UPDATE_EXCLUDES.length)
})

test('readExcludeFile skips comments and blank lines and tolerates CRLF', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'imgmesh-exclude-'))
  try {
    const file = join(dir, 'local.exclude')
    await writeFile(file, '\ufeff# node-local files\r\n/etc/fstab\r\n\r\n   \r\n; rsync comment\r\n  /home/*  \r\n- /var/log/*\r\n+ /var/log/keep\r\n*.bak\t\r\n# end\r\nno-newline-at-end')
    const patterns = await readExcludeFile(file)
    assert.deepEqual(patterns, ['/etc/fstab', '/home/*', '- /var/log/*', '+ /var/log/keep', '*.bak', 'no-newline-at-end'])
    const list = new ExcludeList(patterns)
    assert.equal(list.excludes('/etc/fstab', false), true)
    assert.equal(list.excludes('/home/a/b', false), true)
    assert.equal(list.excludes('/var/log/syslog', false), true)
    assert.equal(list.excludes('/x/y.bak', false), true)
    assert.equal(list.excludes('/etc/passwd', false), false)
    const lf = join(dir, 'lf.exclude')
    await writeFile(lf, 'a\nb\n')
    assert.deepEqual(await readExcludeFile(lf), ['a', 'b'])
    const empty = join(dir, 'empty.exclude')
    await writeFile(empty, '')
    assert.deepEqual(await readExcludeFile(empty), [])
    await assert.rejects(readExcludeFile(join(dir, 'missing')), isBadArg)
    await assert.rejects(readExcludeFile(dir), isBadArg)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('checking every path of a large tree is fast', () => {
  const list = new ExcludeList([...DEFAULT_CAPTURE_EXCLUDES, ...DEFAULT_UPDATE_EXCLUDES])
  const t0 = performance.now()
  let n = 0
  for (let a = 0; a < 20; a++) {
    for (let b = 0; b < 50; b++) {
      for (let c = 0; c < 100; c++) {
        list.excludes(`/usr/share/d${a}/e${b}/f${c}.txt`, false)
        n++
      }
    }
  }
  const perPath = (performance.now() - t0) / n
  assert.ok(perPath < 0.05, `${perPath.toFixed(4)} ms per path`)
})
