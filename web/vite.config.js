// A library build of the BillingCard (React stays the host page's), and the Vitest set-up.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react()],
  build: {
    lib: { entry: "src/index.js", formats: ["es"], fileName: () => "billing-card.js" },
    rollupOptions: { external: ["react", "react-dom", "react/jsx-runtime"] },
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.jsx"],
  },
});
