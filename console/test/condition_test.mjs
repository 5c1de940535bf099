// The targeting rows against the condition JSON they stand for:
// node --experimental-detect-module --test console/test/ (ctest console_unit).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { conditionFromRows, formatScalar, parseScalar, rowsFromCondition, rowsFromText } from '../src/pages/condition.js';

test('values typed as the user writes them', () => {
  assert.equal(parseScalar('DE'), 'DE');
  assert.equal(parseScalar(' 18 '), 18);
  assert.equal(parseScalar('true'), true);
  assert.equal(parseScalar('null'), null);
  assert.equal(parseScalar('"42"'), '42');
  assert.equal(parseScalar('{"a": 1}'), '{"a": 1}'); // not a scalar: the text
  for (const v of ['DE', 42, true, null, '42', 'true', '']) assert.deepEqual(parseScalar(formatScalar(v)), v);
});

test('conditions rows can say round-trip exactly', () => {
  const conditions = [
    { country: 'DE' },
    { country: { $in: ['DE', 'FR'] }, age: { $gte: 18, $lt: 65 } },
    { id: { $exists: true } },
    { email: { $regex: '@example\\.com$' }, plan: { $ne: 'free' }, beta: true },
    { code: { $nin: ['42', 7] } },
    { 'device.os': 'ios' },
  ];
  for (const c of conditions) {
    const rows = rowsFromCondition(c);
    assert.ok(rows, JSON.stringify(c));
    assert.deepEqual(conditionFromRows(rows), c);
  }
  assert.deepEqual(rowsFromCondition({ age: { $gt: 17 } }), [{ attribute: 'age', op: '$gt', value: '17' }]);
});

test('anything richer is left to the JSON', () => {
  for (const c of [{ $or: [{ a: 1 }] }, { a: { $not: { $eq: 1 } } }, { a: { $elemMatch: { $eq: 1 } } },
    { a: [1, 2] }, { a: { $in: [[1]] } }, { a: { $exists: 'yes' } }, { a: {} }, [1], 'x']) {
    assert.equal(rowsFromCondition(c), null, JSON.stringify(c));
  }
  assert.equal(rowsFromText('{"a": '), null);
  assert.deepEqual(rowsFromText(''), []);
});

test('rows without an attribute are left out; one "is" is written short', () => {
  assert.deepEqual(conditionFromRows([{ attribute: '', op: '$eq', value: 'x' }]), {});
  assert.deepEqual(conditionFromRows([{ attribute: ' country ', op: '$eq', value: 'DE' }]), { country: 'DE' });
  assert.deepEqual(conditionFromRows([{ attribute: 'c', op: '$in', value: 'DE, FR,, 3' }]), { c: { $in: ['DE', 'FR', 3] } });
  assert.deepEqual(conditionFromRows([{ attribute: 'x', op: '$exists', value: 'false' }]), { x: { $exists: false } });
  assert.deepEqual(conditionFromRows([{ attribute: 'a', op: '$eq', value: '1' }, { attribute: 'a', op: '$lt', value: '5' }]),
    { a: { $eq: 1, $lt: 5 } });
});
