// Differential test of Capstan's WHATWG URL parser (src/experiments/whatwg_url.h)
// against node's own `new URL` and URLSearchParams, on seeded random URLs
// built from pieces real URLs and the standard's corner cases are made of
// (schemes, slashes and backslashes, userinfo, IPv4 in every radix, IPv6,
// percent-escapes, dot segments, spaces, tabs and newlines, non-ASCII).
//
//   node url_differential.cjs --probe PATH/whatwg_url_probe [--seed N] [--cases N] [--intl N]
//
// Then --intl N URLs whose host is internationalized (randomIntlHost: scripts,
// full-width dots, combining marks, joiners, emoji, bidi, "xn--" labels valid
// and broken, percent-escaped).
//
// Compares href, origin, host, pathname, search, hash, the searchParams'
// pairs and their serialization, or that both fail. Capstan's answer
// "unsupported" (file: and non-special schemes) is counted and allowed only
// where node's URL has such a scheme; exit 1 on any difference.
"use strict";

const { spawn } = require("child_process");
// node's bundled punycode module (deprecated for applications, fine for
// making test labels); without the warning on stderr.
process.noDeprecation = true;
const punycode = require("punycode");
const url = require("url");
const readline = require("readline");
const { makeRandom } = require("./random.cjs");

function parseArgs(argv) {
  const args = { probe: null, seed: 20261207, cases: 20000, intl: 20000 };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[++i];
    if (k === "--probe") args.probe = v;
    else if (k === "--seed") args.seed = Number(v);
    else if (k === "--cases") args.cases = Number(v);
    else if (k === "--intl") args.intl = Number(v);
    else {
      console.error("unknown argument " + k);
      process.exit(2);
    }
  }
  if (!args.probe) {
    console.error("usage: node url_differential.cjs --probe PATH [--seed N] [--cases N] [--intl N]");
    process.exit(2);
  }
  return args;
}

const SCHEMES = ["https:", "https:", "http:", "HTTP:", "hTtPs:", "ws:", "wss:", "ftp:", "", "", "file:", "mailto:", "h+x:"];
const SLASHES = ["//", "//", "//", "/", "", "\\\\", "///", "/\\", "\\/"];
const USERINFO = ["", "", "", "", "user@", "u:p@", "a@b@", "u:p:q@", "@", "us er:p w@", "\u00e9:\u00fc@", "u%40:@", ":@", "u^|[]@"];
const HOSTS = [
  "example.com", "example.com", "Example.COM", "www.shop.example.com", "a.b.c", "localhost", "_", "_____",
  "127.0.0.1", "0x7f.1", "0x7F.0.0.1", "017.0.0.1", "2130706433", "1.2.3.4.5", "256.1.1.1", "1.256", "0x100000000",
  "1.2.3.", "1.2.3..", "09.1", "0x", "a.0x", "a.1", "1.a", "4294967295", "4294967296", "0.0.0.0", "0",
  "[::1]", "[2001:DB8::1]", "[::ffff:1.2.3.4]", "[1:2:3:4:5:6:7:8]", "[1::2::3]", "[0:0:0:0:0:0:0:0]", "[1:0:0:2:0:0:0:3]",
  "[::]", "[1::]", "[::1.2.3.4]", "[1:2:3:4:5:6:1.2.3.4]", "[1:2:3:4:5:6:7:1.2.3.4]", "[::1", "[g::1]", "[1:2:3:4:5:6:7:8:9]", "[::01.2.3.4]",
  "%41.com", "a%2Ecom", "a%2ecom", "%7F", "ex%00.com", "a%25b", "a b", "a<b", "a^b", "a|b", "a..b", "a.", "",
  "b\u00fccher.de", "M\u00dcLLER.de", "\u00e9cole.FR", "stra\u00dfe.de", "\u00f1and\u00fa.com", "a.\u00ff.b", "\u00c0-\u00ff.com",
  "a\u00d7b.com", "a\u00f7b.com", "caf\u00e9.xn--p1ai", "xn--bcher-kva.de", "XN--MLLER-KVA.de", "xn--a-", "xn--zz", "xn--tda.xn--strae-oqa.de", "XN--a.com", "a\u3002b", "exa%C3%A9mple.com", "a*b", "a'b", "a~b", "a!b$c&d",
];
const PORTS = ["", "", "", "", ":", ":80", ":443", ":21", ":8080", ":0", ":65535", ":65536", ":0443", ":x", ":99999999999", ":8 0", ":-1"];
const PATHS = [
  "", "/", "/", "/a/b", "/pricing", "/a/../b", "/./a", "/a/%2e%2e/b", "/a/.%2E/b", "/a b", "/\u00e9t\u00e9", "/a\\b", "/%41%zz",
  "/{}`|^", "/..", "/../..", "/a/.", "/a/..", "/.%2E/", "/a\tb", "/a\nb", "/a\rb", "/\"<>", "/a#/b", "/~user/x.html",
  "/a//b", "//", "/a/b/", "/%2e", "/.", "/\u0001\u007f", "/;=,+", "/a'b", "/\ud83d\ude00", "/C:/x", "/..%2f",
];
const QUERIES = [
  "", "", "", "?", "?a=1", "?a=1&a=2", "?a=b c", "?q='\"<>", "?\u00e9=\u00fc", "?a+b=c%20d", "?%zz=1", "?&&a", "?=x",
  "?a=%C3", "?x=1?y", "?a=1&b", "?utm_source=news&utm_medium=email", "?%E2%82%AC=%F0%9F%98%80", "?a=%00", "?`{}|^",
  "?a=%ef%bb%bfb", "?%EF%BB%BFa=1", "?a=1;b=2", "?\u0001=\u0002",
];
const FRAGMENTS = ["", "", "", "#", "#top", "#a b", "#<>`\"", "#\u00e9", "#a#b", "#?x", "#%zz", "#{}|^"];
const RELATIVE = ["", "pricing", "a/b", "../x", "./", "?q=1", "#f", "//other.org/p", "/abs", "\\\\h\\p", ".", "..", "a:b", "https:rel", "http:rel", "https:/x", "https:\\\\h"];
const NOISE = [" ", "\t", "\n", "\u0000", "\u0001", "%", "@", ":", "/", "\\", "?", "#", "[", "]", ".", "\u00e9", "%2e", "%00", "*", "+"];

function randomUrl(r) {
  let s;
  if (r.chance(0.15)) {
    s = r.pick(RELATIVE) + (r.chance(0.3) ? r.pick(QUERIES) : "") + (r.chance(0.2) ? r.pick(FRAGMENTS) : "");
  } else {
    s = r.pick(SCHEMES) + r.pick(SLASHES) + r.pick(USERINFO) + r.pick(HOSTS) + r.pick(PORTS) +
      r.pick(PATHS) + r.pick(QUERIES) + r.pick(FRAGMENTS);
  }
  if (r.chance(0.2)) {
    // By code points: a lone surrogate is not valid JSON text for capstan.
    const points = Array.from(s);
    points.splice(r.int(0, points.length), 0, r.pick(NOISE));
    s = points.join("");
  }
  if (r.chance(0.05)) s = r.pick([" ", "\u0001", "\t"]) + s + r.pick([" ", "\n", "\u0000"]);
  return s;
}

// Why Capstan may say "unsupported": whatwg_url.h's documented remainder,
// judged by node's own answer: a file: or non-special scheme, or input node
// rejects anyway. Internationalized hosts are never allowed to be.
function unsupportedAllowed(expected) {
  if (expected.failure) return true;
  return !/^(https?|wss?|ftp):/.test(expected.href);
}

// Internationalized hosts: labels drawn from scripts and from the code
// points UTS #46 treats specially (mapped, ignored, disallowed, deviation,
// joiners, combining marks, bidi classes, Unicode 14/15 additions), "xn--"
// labels that are valid, mutated or made up, and percent-escaped forms.
const CODE_POINT_POOLS = [
  [0x430, 0x44f], [0x410, 0x42f], [0x391, 0x3a9], [0x3b1, 0x3c9], [0x3c2, 0x3c2], [0x4e00, 0x9fff],
  [0x3041, 0x3096], [0x30a1, 0x30fa], [0xac00, 0xd7a3], [0x1100, 0x1112], [0x621, 0x64a], [0x660, 0x669],
  [0x6f0, 0x6f9], [0x5d0, 0x5ea], [0x591, 0x5bd], [0x915, 0x939], [0x93c, 0x94d], [0x94d, 0x94d],
  [0xe01, 0xe30], [0xe31, 0xe3a], [0x1200, 0x1248], [0xff01, 0xff5e], [0xff10, 0xff19], [0xff21, 0xff3a],
  [0x300, 0x36f], [0x1ab0, 0x1ace], [0x898, 0x89f], [0x1f600, 0x1f64f], [0x1f300, 0x1f3ff], [0x1fae0, 0x1faf8],
  [0x2600, 0x26ff], [0x2764, 0x2764], [0xfe00, 0xfe0f], [0x200c, 0x200d], [0x200b, 0x200b], [0xad, 0xad],
  [0x2060, 0x2064], [0xdf, 0xdf], [0x1e9e, 0x1e9e], [0x100, 0x17f], [0x1e00, 0x1eff], [0xfb00, 0xfb06],
  [0x2100, 0x214f], [0x2460, 0x24ff], [0x3200, 0x33ff], [0x2000, 0x206f], [0x2260, 0x226f], [0x2488, 0x249b],
  [0x378, 0x379], [0xe000, 0xe010], [0xfff0, 0xfffd], [0x1734, 0x1734], [0x1714, 0x1715], [0x61c, 0x61c],
  [0x700, 0x74f], [0x7c0, 0x7fa], [0x840, 0x85b], [0x1820, 0x1878], [0xa840, 0xa877], [0x10a0, 0x10ff],
  [0x13a0, 0x13f5], [0xab70, 0xabbf], [0x1d400, 0x1d7ff], [0x1e900, 0x1e94b], [0x0, 0x0], [0xfffd, 0xfffd],
  // Anything at all: the BMP without surrogates, the other planes (tags and
  // variation selectors in plane 14 are ignored; much is unassigned).
  [0x80, 0xd7ff], [0xe000, 0xffff], [0x10000, 0x3ffff], [0xe0000, 0xe01ef], [0x40000, 0x10ffff],
];
const ASCII_BITS = ["a", "b", "z", "0", "1", "9", "-", "--", "_", "x", "n", "A", "Z", "'", "*", "~", "!", "$", "=", "+", ","];
const DOTS = [".", ".", ".", "\u3002", "\uff0e", "\uff61"];

function randomLabelText(r) {
  const pools = [r.pick(CODE_POINT_POOLS), r.pick(CODE_POINT_POOLS), r.pick(CODE_POINT_POOLS)];
  let s = "";
  const n = r.int(1, 7);
  for (let i = 0; i < n; i++) {
    if (r.chance(0.2)) {
      s += r.pick(ASCII_BITS);
    } else {
      const [lo, hi] = r.pick(r.chance(0.7) ? [pools[0]] : pools);
      s += String.fromCodePoint(r.int(lo, hi));
    }
  }
  return s;
}

// A joiner between letters of the scripts whose joining types decide
// ContextJ (Arabic, Syriac, NKo, Mandaic, Mongolian, Phags-pa, Adlam) or
// after a virama.
const JOINING_POOLS = [[0x620, 0x64a], [0x671, 0x6d5], [0x710, 0x74f], [0x760, 0x77f], [0x7ca, 0x7ea], [0x840, 0x858],
  [0x860, 0x86a], [0x870, 0x88e], [0x8a0, 0x8c8], [0x1820, 0x18aa], [0xa840, 0xa872], [0x1e900, 0x1e943], [0x10ac0, 0x10aef]];
const VIRAMAS = [0x94d, 0x9cd, 0xa4d, 0xd4d, 0x1714, 0x1715, 0x11070, 0x11f41, 0xa806];

function randomJoinerLabel(r) {
  const letter = () => String.fromCodePoint(r.int(...r.pick(JOINING_POOLS)));
  const joiner = r.chance(0.8) ? "\u200c" : "\u200d";
  if (r.chance(0.2)) return r.pick(["\u0915", "a", "\u0628"]) + String.fromCodePoint(r.pick(VIRAMAS)) + joiner + letter();
  return (r.chance(0.9) ? letter() : "") + (r.chance(0.3) ? letter() : "") + joiner + (r.chance(0.9) ? letter() : "") +
    (r.chance(0.3) ? r.pick(["\u064b", "a", "1", "\u0661"]) : "");
}

function randomAceLabel(r) {
  const text = randomLabelText(r);
  // The label's own ACE form (valid when the label is), or raw punycode of
  // text that is not mapped (upper case, ignored code points), mutated.
  let ace;
  try {
    ace = r.chance(0.6) ? url.domainToASCII(text).split(".")[0] : "xn--" + punycode.encode(text);
  } catch (e) {
    ace = "";
  }
  if (!ace.startsWith("xn--")) ace = "xn--" + punycode.encode(text);
  if (r.chance(0.25)) {
    const i = r.int(4, ace.length);
    ace = ace.slice(0, i) + r.pick(["", "a", "9", "-", "zz", "\u00e9"]) + ace.slice(i + (r.chance(0.5) ? 1 : 0));
  }
  if (r.chance(0.1)) ace = r.pick(["xn--", "xn--a", "xn--a-", "xn--ls8h", "xn--99999999", "xn---", "xn--ab-c", "XN--E1AFMKFD", "xn--zca", "xn--nxa"]);
  return r.chance(0.1) ? ace.toUpperCase() : ace;
}

function randomIntlHost(r) {
  const labels = [];
  const n = r.int(1, 3);
  for (let i = 0; i < n; i++) {
    const kind = r.next();
    if (kind < 0.15) labels.push(randomAceLabel(r));
    else if (kind < 0.22) labels.push(randomJoinerLabel(r));
    else if (kind < 0.3) labels.push(r.pick(["com", "de", "xn--p1ai", "org", "1", "0x1", "a-b"]));
    else labels.push(randomLabelText(r));
  }
  let host = labels.map((l, i) => (i ? r.pick(DOTS) : "") + l).join("");
  if (r.chance(0.1)) host += r.pick(DOTS);
  if (r.chance(0.1)) host = encodeURIComponent(host);
  return host;
}

function nodeAnswer(input, base) {
  let u;
  try {
    u = base === null ? new URL(input) : new URL(input, base);
  } catch (e) {
    return { failure: true };
  }
  return {
    href: u.href, origin: u.origin, host: u.host, pathname: u.pathname, search: u.search, hash: u.hash,
    params: [...u.searchParams], serialized: u.searchParams.toString(),
  };
}

function deepEqual(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

async function main() {
  const args = parseArgs(process.argv);
  const r = makeRandom(args.seed);
  const requests = [];
  for (let i = 0; i < args.cases; i++) {
    const base = r.pick([null, null, "https://_", "https://_____", "http://example.com/a/b?q#f", "https://u:p@h.com:8443/dir/file"]);
    requests.push({ input: randomUrl(r), base });
  }
  for (let i = 0; i < args.intl; i++) {
    const input = r.pick(["https://", "http://", "wss://", "//", "ftp://u@"]) + randomIntlHost(r) +
      r.pick(["", "/", "/p?q=1", ":8080/x", "#f"]);
    requests.push({ input, base: input.startsWith("//") ? "https://_" : null });
  }
  const child = spawn(args.probe, [], { stdio: ["pipe", "pipe", "inherit"] });
  const answers = [];
  readline.createInterface({ input: child.stdout }).on("line", (l) => answers.push(l));
  const exited = new Promise((resolve) => child.on("close", resolve));
  child.stdin.on("error", () => {});
  child.stdin.end(requests.map((q) => JSON.stringify(q)).join("\n") + "\n");
  const code = await exited;
  if (code !== 0) throw new Error("whatwg_url_probe exited with " + code);

  let failures = 0, unsupported = 0, bothFailed = 0, agreed = 0, punycoded = 0, intlAgreed = 0, intlValid = 0;
  for (let i = 0; i < requests.length; i++) {
    const { input, base } = requests[i];
    const intl = i >= args.cases;
    const expected = nodeAnswer(input, base);
    let got;
    try {
      got = JSON.parse(answers[i]);
    } catch (e) {
      got = { unparsable: answers[i] };
    }
    if (got.unsupported && unsupportedAllowed(expected)) {
      unsupported++;
      continue;
    }
    if (deepEqual(expected, got)) {
      agreed++;
      if (expected.failure) bothFailed++;
      if (/xn--/.test(expected.host || "")) punycoded++;
      if (intl) intlAgreed++;
      if (intl && !expected.failure) intlValid++;
      continue;
    }
    failures++;
    if (failures <= 8) {
      process.stderr.write(`MISMATCH (case ${i}, seed ${args.seed})\n  input: ${JSON.stringify(input)} base: ${JSON.stringify(base)}\n  node:    ${JSON.stringify(expected)}\n  capstan: ${JSON.stringify(got)}\n`);
    }
  }
  process.stderr.write(`url differential: seed ${args.seed}, ${requests.length} URLs: ${agreed} agreed (${bothFailed} of them invalid in both, ${punycoded} with punycode hosts; of the ${args.intl} internationalized hosts ${intlAgreed} agreed, ${intlValid} of them valid), ${unsupported} unsupported (file: and non-special schemes), ${failures} differ\n`);
  // The generator must mostly make URLs Capstan parses, or the test proves little.
  if (agreed < requests.length * 0.6 || intlValid < args.intl * 0.2) {
    process.stderr.write("FAILED: too few cases answered\n");
    process.exit(1);
  }
  if (failures) process.exit(1);
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
