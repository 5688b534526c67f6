// ESLint flat config: the JavaScript and typescript-eslint recommended rules, with type information.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  // openapi.d.ts is generated (npm run generate:api); lib/ is tsc output.
  { ignores: ['lib/', 'node_modules/', 'src/openapi.d.ts'] },
  {
    files: ['src/**/*.ts'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname
      }
    }
  }
);
