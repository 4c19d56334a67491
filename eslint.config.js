// Lint: typescript-eslint's type-aware recommended rules, on top of ESLint's.
// Formatting is Prettier's job (.prettierrc.json); nothing here is about layout.
// Run by `npm test` (npm run lint) before the type check and the suites.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Rooms: who may import whom (README, Development). The helper's own build also
 * refuses any file outside src/helper and src/shared (tsconfig.helper.json). */
const ROOMS = [
  [
    'src/shared/**',
    ['**/frontend/**', '**/helper/**', '**/cli/**'],
    'shared code is loaded by root and front alike: it imports only shared code',
  ],
  ['src/helper/**', ['**/frontend/**', '**/cli/**'], 'root code imports only src/helper and src/shared'],
  ['src/frontend/**', ['**/helper/**', '**/cli/**'], 'the front reaches root only over the channel, never by import'],
  ['src/cli/**', ['**/helper/*.js'], 'commands may use root start-up code (helper/startup), never the helper runtime'],
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'test/fixtures/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // A daemon must not lose a rejection: every promise is awaited, returned or voided on purpose.
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's test() and describe() return promises the runner itself awaits.
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      // The sanitisers (log relay, wire, report, config) match control characters on purpose.
      'no-control-regex': 'off',
      // Decoders compare a byte read off the wire with the enum's members; that is their job.
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
      // An async implementation of a promise-returning interface needs no await: it turns
      // a throw into a rejection, which is what callers handle.
      '@typescript-eslint/require-await': 'off',
    },
  },
  ...ROOMS.map(([files, patterns, message]) => ({
    files: [files],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: patterns, message }] }] },
  })),
  {
    // Tests read parsed YAML and SQL rows as loose objects; a type for each would only restate the assertion.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
    },
  },
  {
    // Plain JavaScript (bin/, scripts/, test/run.mjs, this file) is not in a tsconfig project.
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      parserOptions: { projectService: false, program: null },
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly' },
    },
  },
);
