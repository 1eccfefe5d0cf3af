/*
 * A VapourSynth host with no Python at all, for tests/test_vs_nopython.py.
 *
 * Usage: nopython_host LIBVAPOURSYNTH PLUGIN_SO [explicit]
 *
 * It dlopens the core library, creates a core (autoloading on, as any host would; with "explicit" it is off),
 * makes sure the animesr plugin is loaded (with std.LoadPlugin if autoloading did not pick it up), then calls
 * animesr.Upscale on a blank RGBS clip. Each finding is printed as one "key=value" line for the test to read.
 * It exits non-zero only when the host itself could not do its job (core library, API or namespace missing).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "VapourSynth4.h"

typedef const VSAPI *(VS_CC *get_api_fn)(int version);

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "explicit") != 0)) {
        fprintf(stderr, "usage: %s LIBVAPOURSYNTH PLUGIN_SO [explicit]\n", argv[0]);
        return 2;
    }
    int explicit_load = argc == 4;
    /* No Python in this process: the plugin's run-time lookup must come back empty too. */
    printf("python_symbol=%s\n", dlsym(RTLD_DEFAULT, "Py_IsInitialized") ? "present" : "absent");

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen(%s) failed: %s\n", argv[1], dlerror());
        return 3;
    }
    get_api_fn get_api = (get_api_fn)dlsym(lib, "getVapourSynthAPI");
    const VSAPI *vsapi = get_api ? get_api(VAPOURSYNTH_API_VERSION) : NULL;
    if (!vsapi) {
        fprintf(stderr, "getVapourSynthAPI(%d) failed\n", VAPOURSYNTH_API_VERSION);
        return 4;
    }
    VSCore *core = vsapi->createCore(explicit_load ? ccfDisableAutoLoading : 0);
    if (!core) {
        fprintf(stderr, "createCore failed\n");
        return 5;
    }

    VSPlugin *ns = vsapi->getPluginByNamespace("animesr", core);
    printf("autoloaded=%d\n", ns != NULL);
    if (!ns) {
        VSMap *args = vsapi->createMap();
        vsapi->mapSetData(args, "path", argv[2], -1, dtUtf8, maReplace);
        VSMap *ret = vsapi->invoke(vsapi->getPluginByNamespace("std", core), "LoadPlugin", args);
        const char *e = vsapi->mapGetError(ret);
        printf("loadplugin_error=%s\n", e ? e : "");
        vsapi->freeMap(ret);
        vsapi->freeMap(args);
        ns = vsapi->getPluginByNamespace("animesr", core);
    }
    if (!ns) {
        printf("namespace=missing\n");
        vsapi->freeCore(core);
        return 6;
    }
    printf("namespace=animesr\n");
    printf("plugin_path=%s\n", vsapi->getPluginPath(ns));

    VSMap *bargs = vsapi->createMap();
    vsapi->mapSetInt(bargs, "format", pfRGBS, maReplace);
    vsapi->mapSetInt(bargs, "width", 16, maReplace);
    vsapi->mapSetInt(bargs, "height", 16, maReplace);
    vsapi->mapSetInt(bargs, "length", 3, maReplace);
    VSMap *blank = vsapi->invoke(vsapi->getPluginByNamespace("std", core), "BlankClip", bargs);
    vsapi->freeMap(bargs);
    if (vsapi->mapGetError(blank)) {
        fprintf(stderr, "BlankClip failed: %s\n", vsapi->mapGetError(blank));
        return 7;
    }
    VSMap *uargs = vsapi->createMap();
    vsapi->mapConsumeNode(uargs, "clip", vsapi->mapGetNode(blank, "clip", 0, NULL), maReplace);
    vsapi->freeMap(blank);
    VSMap *ret = vsapi->invoke(ns, "Upscale", uargs);
    const char *e = vsapi->mapGetError(ret);
    printf("upscale_error=%s\n", e ? e : "");
    vsapi->freeMap(ret);
    vsapi->freeMap(uargs);

    vsapi->freeCore(core);
    printf("done=1\n");
    fflush(stdout);
    return 0;
}
