import { vitePreprocess } from '@sveltejs/vite-plugin-svelte';

export default {
  preprocess: vitePreprocess(),
  compilerOptions: {
    // Styles go to the CSS file, never into <style> tags at run time (CSP: style-src 'self').
    css: 'external',
  },
};
