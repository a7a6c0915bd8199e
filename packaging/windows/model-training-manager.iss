; Inno Setup script: the Windows installer of the one-folder app that build.spec makes.
; packaging/build.py runs it on Windows; by hand:
;   iscc /DAppVersion=0.1.0 /DIconFile=build\app.ico /DBuild=full "/DSourceDir=dist\full\Model Training Manager" /Odist packaging\windows\model-training-manager.iss
; It installs for the current user by default (no administrator rights needed; the setup
; offers an all-users install too), adds a Start menu entry and registers an uninstaller.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif
#ifndef Build
  #define Build "full"
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\" + Build + "\Model Training Manager"
#endif
#define AppName "Model Training Manager"
#define AppExe "Model Training Manager.exe"
#if Build == "full"
  #define Suffix ""
#else
  #define Suffix "-gui"
#endif

[Setup]
; A fixed AppId keeps upgrades and the uninstaller tied to one entry; both builds share it,
; since they install into the same folder.
AppId={{6F0C1D3A-6B0E-4C1E-9B7A-3E2F4D5C6B7A}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Model Training Manager developers
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputBaseFilename=Model-Training-Manager-{#AppVersion}{#Suffix}-setup
#ifdef IconFile
SetupIconFile={#IconFile}
#endif
UninstallDisplayIcon={app}\{#AppExe}
Compression=lzma2/normal
SolidCompression=yes
WizardStyle=modern

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent
