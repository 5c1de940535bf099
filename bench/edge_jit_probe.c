// What turning LuaJIT's JIT off (and the count hook on) costs, for
// docs/benchmarks/edge.md: two loops, one arithmetic (the JIT's best case),
// one dominated by string functions (C code, the same either way), each in
// a fresh state with the JIT on, off, and off with a count hook armed (as
// src/gateway/edge/vm.cc runs functions).
//
//   cc -O2 bench/edge_jit_probe.c $(pkg-config --cflags --libs luajit) -o /tmp/edge_jit_probe
//   taskset -c 0 /tmp/edge_jit_probe
#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <time.h>

static void Hook(lua_State* L, lua_Debug* ar) {
  (void)L;
  (void)ar;
}

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void Run(int jit, int hook, const char* name, const char* code) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  if (!jit) luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  // A count far away: the cost of the hooked dispatch, not of the hook.
  if (hook) lua_sethook(L, Hook, LUA_MASKCOUNT, 1000000000);
  double t = Now();
  if (luaL_dostring(L, code)) printf("error: %s\n", lua_tostring(L, -1));
  printf("%-8s jit=%s hook=%s %7.1f ms\n", name, jit ? "on " : "off", hook ? "on " : "off",
         (Now() - t) * 1e3);
  lua_close(L);
}

int main(void) {
  const char* arith = "local x = 0 for i = 1, 20000000 do x = x + i % 7 end";
  const char* strings =
      "local t = {} for i = 1, 200000 do t[#t + 1] = ('k' .. i):upper():sub(1, 3) end";
  const int modes[][2] = {{1, 0}, {0, 0}, {0, 1}};
  for (int m = 0; m < 3; ++m) {
    Run(modes[m][0], modes[m][1], "arith", arith);
    Run(modes[m][0], modes[m][1], "strings", strings);
  }
  return 0;
}
