#pragma once
// The environments' physics and constants (metarl/envs): derivatives, RK4/Euler, angle wrap, speed clamp.

#include "interface.h"

namespace {

// The environments this kernel implements, by id (Options::env, the index in ENVS): the metarl/envs
// class of that name with these parameters (Buffers::env_params rows, its param_defaults order).
// metarl/backends/native.py reads the table (metarl_env) and declines any other env by name.
enum EnvId : int32_t { PENDULUM = 0, DOUBLE_PENDULUM = 1, ENV_COUNT };
struct EnvInfo {
    const char* signature;  // "Name param1 param2 ..."
    int links, n_params;
};
constexpr EnvInfo ENVS[ENV_COUNT] = {
    {"Pendulum length mass gravity damping", 1, 4},
    {"DoublePendulum length1 length2 mass1 mass2 gravity damping", 2, 6},
};

constexpr float PI = 3.14159265358979323846f;
constexpr float DOWN_PENALTY = 1.1f;
constexpr float GYM_SPEED_COST = 0.1f, GYM_TORQUE_COST = 0.001f;  // metarl/envs/base.py

// An angle wrapped to [-pi, pi): torch.remainder(theta + pi, 2 pi) - pi (metarl/envs/base.py `wrap_angle`).
inline vf vwrap(vf theta) {
    vf a = theta + PI;
    return a - vfloor(a * (1.0f / (2.0f * PI))) * (2.0f * PI) - PI;
}

// Physics of env `env` (an EnvId): derivative of one state under torque; params as in ENVS.
struct Physics {
    const vf* p;  // Pendulum: length, mass, gravity, damping. DoublePendulum: l1, l2, m1, m2, g, damping.
    int env;
    int links = ENVS[env].links;

    void derivative(const vf* st, vf torque, vf* d) const {
        if (env == PENDULUM) {
            vf l = p[0], m = p[1], g = p[2], b = p[3];
            d[0] = st[1];
            d[1] = -(g / l) * vsin(st[0]) + torque / (m * (l * l)) - b * st[1];
            return;
        }
        // DOUBLE_PENDULUM
        vf l1 = p[0], l2 = p[1], m1 = p[2], m2 = p[3], g = p[4], b = p[5];
        vf t1 = st[0], w1 = st[1], t2 = st[2], w2 = st[3];
        vf sin_d, cos_d;
        vsincos(t1 - t2, &sin_d, &cos_d);
        vf m11 = (m1 + m2) * l1 * l1;
        vf m12 = m2 * l1 * l2 * cos_d;
        vf m22 = m2 * l2 * l2;
        vf f1 = -m2 * l1 * l2 * w2 * w2 * sin_d - (m1 + m2) * g * l1 * vsin(t1) + torque;
        vf f2 = m2 * l1 * l2 * w1 * w1 * sin_d - m2 * g * l2 * vsin(t2);
        vf det = m11 * m22 - m12 * m12;
        d[0] = w1;
        d[1] = (m22 * f1 - m12 * f2) / det - b * w1;
        d[2] = w2;
        d[3] = (m11 * f2 - m12 * f1) / det - b * w2;
    }

    // One step of dt (per individual: the same float arithmetic as one dt for all).
    void advance(vf* st, vf torque, vf dt, const Options& o) const {
        const int n = 2 * links;
        if (o.rk4) {
            vf k1[4], k2[4], k3[4], k4[4], tmp[4];
            const vf half = 0.5f * dt, sixth = dt / 6.0f;
            derivative(st, torque, k1);
            for (int i = 0; i < n; ++i) tmp[i] = st[i] + half * k1[i];
            derivative(tmp, torque, k2);
            for (int i = 0; i < n; ++i) tmp[i] = st[i] + half * k2[i];
            derivative(tmp, torque, k3);
            for (int i = 0; i < n; ++i) tmp[i] = st[i] + dt * k3[i];
            derivative(tmp, torque, k4);
            for (int i = 0; i < n; ++i) st[i] = st[i] + sixth * (k1[i] + 2.0f * k2[i] + 2.0f * k3[i] + k4[i]);
        } else {
            vf d[4];
            derivative(st, torque, d);
            for (int i = 0; i < n; ++i) st[i] = st[i] + dt * d[i];
        }
        for (int i = 0; i < links; ++i) {
            st[2 * i] = vwrap(st[2 * i]);
            if (o.max_speed > 0) st[2 * i + 1] = clampv(st[2 * i + 1], -o.max_speed, o.max_speed);
        }
    }
};

}  // namespace
